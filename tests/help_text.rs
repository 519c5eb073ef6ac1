//! Every flag and argument of every command says what it is for (issue 18): the test walks the
//! whole clap tree and names each one that has no help text.

use clap::CommandFactory;
use mailctl::cli::Cli;

fn missing_help(cmd: &clap::Command, path: &str, out: &mut Vec<String>) {
    for arg in cmd.get_arguments() {
        let id = arg.get_id().as_str();
        // clap's own --help/--version carry their text already.
        if id == "help" || id == "version" {
            continue;
        }
        let has = arg
            .get_help()
            .or(arg.get_long_help())
            .is_some_and(|h| !h.to_string().trim().is_empty());
        if !has {
            out.push(format!("{path} <{id}>"));
        }
    }
    for sub in cmd.get_subcommands() {
        if sub.get_name() == "help" {
            continue;
        }
        missing_help(sub, &format!("{path} {}", sub.get_name()), out);
    }
}

#[test]
fn every_argument_has_help_text() {
    let mut missing = Vec::new();
    missing_help(&Cli::command(), "mailctl", &mut missing);
    assert!(
        missing.is_empty(),
        "arguments without help text:\n{}",
        missing.join("\n")
    );
}

#[test]
fn the_walk_notices_a_missing_help() {
    // The check itself can fail: a command with an undocumented flag is reported by name.
    let cmd = clap::Command::new("x").arg(clap::Arg::new("bare").long("bare"));
    let mut missing = Vec::new();
    missing_help(&cmd, "x", &mut missing);
    assert_eq!(missing, vec!["x <bare>".to_string()]);
}
