//! send-due and mailings send (issue 7).
#![allow(unused_variables)]

use super::Ctx;
use crate::auth::policy::Actor;
use crate::cli::{SendArgs, SendOpts};
use crate::error::{Error, Result};

pub async fn send_due(ctx: &Ctx, args: SendArgs) -> Result<()> {
    Err(Error::runtime("send-due is not implemented yet"))
}

pub async fn send_one(ctx: &Ctx, actor: &Actor, id: i64, opts: SendOpts) -> Result<()> {
    Err(Error::runtime("mailings send is not implemented yet"))
}
