//! `kiln`: train, resume, check, generate, evaluate, export and benchmark
//! small language models from TOML run configs. Parse, dispatch, exit code;
//! the commands live in `cli/`.

use std::process::ExitCode;

use clap::Parser;

mod cli;

use cli::args::{Cli, Command, ConfigAction, DataAction, DistillAction, TokenizerAction};
use cli::commands::{self as cmd, ClosedPipe};

// Large activation tensors are freed and re-allocated every step; glibc
// returns them to the OS and page-faults them back in, mimalloc (tuned in
// `kiln_trainer::allocator`) keeps them.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Train(a) => cmd::train(a),
        Command::Config {
            action: ConfigAction::Check(a),
        } => cmd::config_check(a),
        Command::Generate(a) => cmd::generate(a),
        Command::Eval(a) => cmd::eval(a),
        Command::Export(a) => cmd::export(a),
        Command::Merge(a) => cmd::merge(a),
        Command::Prune(a) => cmd::prune(a),
        Command::Distill {
            action: DistillAction::Cache(a),
        } => cli::distill_cache(a),
        Command::Quantize(a) => cmd::quantize(a),
        Command::Data {
            action: DataAction::Prepare(a),
        } => cmd::data_prepare(a),
        Command::Data {
            action: DataAction::Stories(a),
        } => cmd::stories(a),
        Command::Data {
            action: DataAction::StoriesQa(a),
        } => cmd::stories_qa(a),
        Command::Data {
            action: DataAction::PrepareInstruct(a),
        } => cmd::prepare_instruct(a),
        Command::Curate(a) => cmd::curate(a),
        Command::Tokenizer {
            action: TokenizerAction::Train(a),
        } => cmd::tokenizer_train(a),
        Command::Bench(a) => cmd::bench(a),
        Command::Launch(a) => cli::distributed::launch(a),
        Command::Classifier { action } => cli::classifier::run(action),
    }
}

fn main() -> ExitCode {
    kiln_trainer::allocator::tune_for_training();
    // Internal errors print one line, not a backtrace.
    std::panic::set_hook(Box::new(|info| {
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        let loc = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        eprintln!(
            "error: {}internal error{loc}: {msg} (please report this with the command you ran)",
            cli::distributed::rank_prefix()
        );
        cli::distributed::abort_job(101);
    }));
    match run(Cli::parse()) {
        Ok(()) => {
            cli::distributed::finalize();
            ExitCode::SUCCESS
        }
        // The reader of our stdout is gone: nothing more to say.
        Err(e) if e.downcast_ref::<ClosedPipe>().is_some() => ExitCode::SUCCESS,
        Err(e) => {
            let msg = format!("{e:#}").replace('\n', " ");
            eprintln!("error: {}{msg}", cli::distributed::rank_prefix());
            // One rank stopping alone would leave the others waiting.
            cli::distributed::abort_job(2);
            ExitCode::from(2)
        }
    }
}
