//! password reset | change (issue 3).
#![allow(unused_variables)]

use super::Ctx;
use crate::cli::PasswordCmd;
use crate::error::{Error, Result};

pub async fn run(ctx: &Ctx, cmd: PasswordCmd) -> Result<()> {
    Err(Error::runtime("password is not implemented yet"))
}
