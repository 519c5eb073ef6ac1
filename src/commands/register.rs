//! register: self sign-up with an emailed confirmation link (issue 3).
#![allow(unused_variables)]

use super::Ctx;
use crate::cli::NewAccount;
use crate::error::{Error, Result};

pub async fn register(ctx: &Ctx, args: NewAccount) -> Result<()> {
    Err(Error::runtime("register is not implemented yet"))
}
