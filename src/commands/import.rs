//! clients import | export: streamed CSV/JSON, all-or-nothing (issue 4).
#![allow(unused_variables)]

use super::Ctx;
use crate::auth::policy::Actor;
use crate::cli::ImportArgs;
use crate::error::{Error, Result};

pub async fn import(ctx: &Ctx, actor: &Actor, args: ImportArgs) -> Result<()> {
    Err(Error::runtime("clients import is not implemented yet"))
}

pub async fn export(ctx: &Ctx, actor: &Actor) -> Result<()> {
    Err(Error::runtime("clients export is not implemented yet"))
}
