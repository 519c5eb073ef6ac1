//! stats (issue 5).
#![allow(unused_variables)]

use super::Ctx;
use crate::cli::StatsArgs;
use crate::error::{Error, Result};

pub async fn run(ctx: &Ctx, args: StatsArgs) -> Result<()> {
    Err(Error::runtime("stats is not implemented yet"))
}
