//! serve: the listener for emailed links (confirmation, password reset, unsubscribe).

use super::Ctx;
use crate::cli::ServeArgs;
use crate::error::Result;

pub async fn run(ctx: &Ctx, args: ServeArgs) -> Result<()> {
    let db = ctx.db().await?.clone();
    crate::web::server::serve(db, &args.bind).await
}
