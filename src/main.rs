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
        eprintln!("mailctl: error: {e}");
        std::process::exit(e.exit_code());
    }
}
