//! attempts list (issue 7).
#![allow(unused_variables)]

use super::Ctx;
use crate::cli::AttemptsCmd;
use crate::error::{Error, Result};

pub async fn run(ctx: &Ctx, cmd: AttemptsCmd) -> Result<()> {
    Err(Error::runtime("attempts is not implemented yet"))
}
