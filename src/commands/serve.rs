//! serve: the listener for emailed links (confirmation, password reset, unsubscribe), and the
//! sender of queued system letters while it runs.

use super::Ctx;
use super::system_letters::{self, SERVE_EVERY};
use crate::cli::ServeArgs;
use crate::error::Result;

pub async fn run(ctx: &Ctx, args: ServeArgs) -> Result<()> {
    let db = ctx.db().await?.clone();
    let (config, queue_db) = (ctx.config.clone(), db.clone());
    // Letters that could not go when they were asked for go from here; a failure is one line
    // on stderr and another try later, never the end of the listener.
    let flusher = tokio::spawn(async move {
        let mut tick = tokio::time::interval(SERVE_EVERY);
        loop {
            tick.tick().await;
            match tokio::time::timeout(SERVE_EVERY, system_letters::flush(&config, &queue_db)).await
            {
                Ok(Ok(f)) => system_letters::report(&f, &queue_db).await,
                Ok(Err(e)) => crate::output::log::warn(format!("system letters: {e}")),
                Err(_) => {}
            }
        }
    });
    let result = crate::web::server::serve(db, &args.bind).await;
    flusher.abort();
    result
}
