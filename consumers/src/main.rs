//! `lifeledger`: the command line. Glue only: parsing, output and exit
//! codes; the work is done by the library crates.

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::Args::parse();
    cli::init_tracing(&args.global);
    match cli::run(args) {
        Ok(outcome) => outcome.exit_code(),
        Err(err) => {
            eprintln!("error: {err:#}");
            cli::Outcome::Unusable.exit_code()
        }
    }
}
