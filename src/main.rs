use clap::Parser;
use clap::error::ErrorKind;

// The sender allocates and frees a letter's buffers on several threads at once; glibc's
// allocator spent ~10% of a send in malloc/free and its arena locks (perf, benches/README.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let cli = mailctl::cli::Cli::try_parse().unwrap_or_else(|e| usage_error(e));
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

/// A command line clap refuses: its usage text on stderr and exit 2, or, when the line (or
/// `MAILCTL_FORMAT`) asks for `--format json`, one JSON error line like any other error's.
/// Help and version go to stdout as they are.
fn usage_error(e: clap::Error) -> ! {
    let shown = matches!(
        e.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    );
    if shown || !asks_for_json(std::env::args_os().skip(1)) {
        e.exit()
    }
    let text = e.render().to_string();
    let first = text.lines().next().unwrap_or_default();
    mailctl::output::configure(mailctl::output::Style {
        bom: false,
        json_logs: true,
    });
    mailctl::output::log::error(first.strip_prefix("error: ").unwrap_or(first), 2);
    std::process::exit(2)
}

/// Whether the (unparsed) command line says `--format json`, its last `--format` winning,
/// else whether `MAILCTL_FORMAT` does.
fn asks_for_json(args: impl Iterator<Item = std::ffi::OsString>) -> bool {
    let args: Vec<String> = args.map(|a| a.to_string_lossy().into_owned()).collect();
    let mut format = None;
    for (i, arg) in args.iter().enumerate() {
        if arg == "--" {
            break;
        }
        if let Some(value) = arg.strip_prefix("--format=") {
            format = Some(value.to_string());
        } else if arg == "--format" {
            format = args.get(i + 1).cloned();
        }
    }
    format
        .or_else(|| std::env::var("MAILCTL_FORMAT").ok())
        .is_some_and(|f| f == "json")
}
