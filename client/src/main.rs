//! `convey`: parse the command line, run it, map the outcome to an exit code.

use std::process::ExitCode;

use clap::Parser;

mod cli;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    cli::init_logging(args.verbose);
    if args.verbose < 2 {
        // One line, whatever RUST_BACKTRACE says; -vv keeps Rust's own report.
        std::panic::set_hook(Box::new(|info| {
            let what = info.to_string().replace('\n', ": ");
            eprintln!(
                "error: convey stopped on an internal error ({what}); please report it (-vv shows a backtrace)"
            );
        }));
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(cli::run(args))
}
