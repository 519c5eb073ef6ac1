//! serve: the listener for emailed links (issue 3).
#![allow(unused_variables)]

use super::Ctx;
use crate::cli::ServeArgs;
use crate::error::{Error, Result};

pub async fn run(ctx: &Ctx, args: ServeArgs) -> Result<()> {
    Err(Error::runtime("serve is not implemented yet"))
}
