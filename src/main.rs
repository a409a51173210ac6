use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = floodway::cli::Cli::parse();
    floodway::app::run(cli)
}
