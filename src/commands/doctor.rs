//! doctor: checks the setup and says plainly what is wrong (issue 6).
#![allow(unused_variables)]

use super::Ctx;
use crate::error::{Error, Result};

pub async fn run(ctx: &Ctx) -> Result<()> {
    Err(Error::runtime("doctor is not implemented yet"))
}
