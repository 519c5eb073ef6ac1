use clap::Parser;

// The sender allocates and frees a letter's buffers on several threads at once; glibc's
// allocator spent ~10% of a send in malloc/free and its arena locks (perf, benches/README.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let cli = mailctl::cli::Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    if let Err(e) = runtime.block_on(mailctl::commands::run(cli)) {
        if matches!(e, mailctl::error::Error::PipeClosed) {
            return;
        }
        // With --format json, one JSON line (level, message, exit_code), like the run's warnings.
        mailctl::output::log::error(&e, e.exit_code());
        std::process::exit(e.exit_code());
    }
}
