//! kiln's entry point: parse flags, dispatch to a verb. See ARCHITECTURE.md.

use clap::Parser;
use xtask::{flags, signals, ui, verbs};

fn main() {
    let cli = flags::Cli::parse();
    let Some(verb) = cli.verb else {
        // `cargo xtask` alone: list the verbs (also when KILN_* variables are set).
        use clap::CommandFactory;
        let _ = flags::Cli::command().print_help();
        std::process::exit(2);
    };
    ui::set_verbose(cli.global.verbose);
    ui::set_quiet(cli.global.quiet);
    if let Err(e) = signals::install() {
        eprintln!("kiln: error: installing signal handlers: {e:#}");
        std::process::exit(1);
    }
    let result = cli.global.cx().and_then(|cx| verbs::run(&cx, verb));
    if let Err(e) = result {
        if e.downcast_ref::<signals::Interrupted>().is_some() || signals::interrupted() {
            signals::stop_all();
            eprintln!("kiln: {e:#}");
            std::process::exit(signals::exit_code());
        }
        eprintln!("kiln: error: {e:#}");
        std::process::exit(1);
    }
}
