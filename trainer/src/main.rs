//! `kiln`: train, resume, check, generate, evaluate, export and benchmark
//! small language models from TOML run configs. Parse, dispatch, exit code;
//! the commands live in `cli/`.

use std::process::ExitCode;

use clap::Parser;

mod cli;

use cli::args::{Cli, Command, ConfigAction, DataAction, TokenizerAction};
use cli::commands::{self as cmd, emit, ClosedPipe};

// Large activation tensors are freed and re-allocated every step; glibc
// returns them to the OS and page-faults them back in, mimalloc (tuned in
// `kiln_trainer::allocator`) keeps them.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Train {
            config,
            set,
            run_dir,
            resume,
        } => cmd::train(config, set, run_dir, resume),
        Command::Config {
            action: ConfigAction::Check { config, set },
        } => cmd::config_check(&config, &set),
        Command::Generate {
            checkpoint,
            prompt,
            max_new_tokens,
            temperature,
            top_k,
            seed,
            device,
        } => {
            let opts = kiln_trainer::generate::SampleOptions {
                max_new_tokens,
                temperature,
                top_k,
                seed,
            };
            emit(&cli::generate(&checkpoint, &prompt, &opts, device)?)
        }
        Command::Eval {
            checkpoint,
            data,
            text,
            logits_out,
            device,
        } => match (text, logits_out) {
            (Some(text), Some(out)) => {
                cli::dump_logits(&checkpoint, &text, &out, device)?;
                emit(&format!("wrote {}", out.display()))
            }
            _ => emit(&cli::eval(&checkpoint, data.as_deref(), device)?.to_string()),
        },
        Command::Export {
            checkpoint,
            format,
            out,
        } => cmd::export(&checkpoint, &format, &out),
        Command::Data {
            action:
                DataAction::Prepare {
                    spec,
                    out,
                    tokenizer,
                    skip_bad,
                    force,
                },
        } => {
            let opts = kiln_data::PrepareOptions { skip_bad, force };
            let report = cli::data::data_prepare(&spec, out, tokenizer, &opts)?;
            emit(report.render().trim_end())?;
            emit(&format!("wrote {}", report.out.display()))
        }
        Command::Data {
            action: DataAction::Stories { docs, seed, out },
        } => {
            let bytes = cli::data::write_stories(&out, seed, docs)?;
            emit(&format!(
                "wrote {} ({docs} stories, {bytes} bytes)",
                out.display()
            ))
        }
        Command::Tokenizer {
            action:
                TokenizerAction::Train {
                    spec,
                    vocab_size,
                    out,
                    kind,
                    max_bytes,
                },
        } => {
            let tok = cli::data::tokenizer_train(&spec, &kind, vocab_size, max_bytes, &out)?;
            let (n, kind) = (tok.vocab_size(), tok.kind());
            emit(&format!("wrote {} ({n} tokens, {kind:?})", out.display()))
        }
        Command::Bench {
            config,
            set,
            steps,
            warmup,
            data,
        } => cmd::bench(&config, &set, steps, warmup, &data),
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
            "error: internal error{loc}: {msg} (please report this with the command you ran)"
        );
    }));
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        // The reader of our stdout is gone: nothing more to say.
        Err(e) if e.downcast_ref::<ClosedPipe>().is_some() => ExitCode::SUCCESS,
        Err(e) => {
            let msg = format!("{e:#}").replace('\n', " ");
            eprintln!("error: {msg}");
            ExitCode::from(2)
        }
    }
}
