//! The `sluice` binary: parse flags, load configuration, start logging, serve until SIGTERM or ctrl-c.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use sluice::config::{Overrides, Settings};
use sluice::server::{Server, StartError};
use sluice::store::StoreError;

/// mimalloc instead of glibc's allocator: the request path allocates many small, short-lived buffers across
/// threads, where glibc's arenas cost measurably more.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit codes from sysexits.h.
const EX_USAGE: u8 = 64;
const EX_NOINPUT: u8 = 66;
const EX_UNAVAILABLE: u8 = 69;
const EX_SOFTWARE: u8 = 70;
const EX_CANTCREAT: u8 = 73;

/// sluice: serve ONNX models over the Open Inference Protocol (V2 REST).
///
/// Settings come from embedded defaults, then --config FILE, then SLUICE__SECTION__KEY environment variables,
/// then these flags.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// A TOML configuration file.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// The model repository: <dir>/<model>/<version>/model.onnx.
    #[arg(long, value_name = "DIR")]
    models: Option<PathBuf>,
    /// Address to listen on.
    #[arg(long)]
    host: Option<String>,
    /// Port to listen on (0 picks a free one).
    #[arg(long)]
    port: Option<u16>,
    /// Path to libonnxruntime.so (otherwise ORT_DYLIB_PATH, then .ort/, then next to the executable).
    #[arg(long, value_name = "FILE", global = true)]
    onnxruntime: Option<PathBuf>,
    /// Check the configuration (defaults, --config, environment, flags) and exit: 0 when valid, 64 with the reason
    /// otherwise. Nothing is loaded or bound; for CI before a deployment.
    #[arg(long)]
    check_config: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

/// Without a subcommand, sluice serves.
#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Validate a model repository offline (load every version, print signatures, check model.toml files and the
    /// routing file's references); exit 1 on any problem. For CI before a deployment.
    Check {
        /// The repository to check.
        repository: PathBuf,
        /// A routing policy file whose model and version references must exist and load.
        #[arg(long, value_name = "FILE")]
        routing: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // --help and --version are not errors; every real flag error is a usage error (64).
            let code = if e.use_stderr() { EX_USAGE } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    if let Some(Command::Check {
        repository,
        routing,
    }) = &cli.command
    {
        return run_check(cli.onnxruntime.as_deref(), repository, routing.as_deref());
    }
    let overrides = Overrides {
        config_file: cli.config,
        models: cli.models,
        host: cli.host,
        port: cli.port,
        onnxruntime: cli.onnxruntime,
    };
    let settings = match Settings::load(&overrides).and_then(|s| s.admin_access().map(|_| s)) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("sluice: {e}");
            return ExitCode::from(EX_USAGE);
        }
    };
    if cli.check_config {
        println!("configuration OK");
        return ExitCode::SUCCESS;
    }
    sluice::telemetry::init(&settings.log);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sluice: cannot start the async runtime: {e}");
            return ExitCode::from(EX_SOFTWARE);
        }
    };
    let result = runtime.block_on(async {
        let server = Server::bind(settings).await?;
        server.run(sluice::shutdown::signal()).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sluice: {e}");
            ExitCode::from(match e {
                StartError::Runtime(_) | StartError::Bind { .. } => EX_UNAVAILABLE,
                StartError::Config(_)
                | StartError::Store(
                    StoreError::Scheme(_)
                    | StoreError::Client { .. }
                    | StoreError::RoutingOutside { .. },
                ) => EX_USAGE,
                StartError::Store(StoreError::Cache { .. }) => EX_CANTCREAT,
                StartError::Store(StoreError::NotADirectory(_)) => EX_NOINPUT,
                StartError::Metrics(_) | StartError::Serve(_) => EX_SOFTWARE,
            })
        }
    }
}

fn run_check(
    onnxruntime: Option<&std::path::Path>,
    repository: &std::path::Path,
    routing: Option<&std::path::Path>,
) -> ExitCode {
    let env = match sluice::runtime::load(onnxruntime) {
        Ok((_, env)) => env,
        Err(e) => {
            eprintln!("sluice: {e}");
            return ExitCode::from(EX_UNAVAILABLE);
        }
    };
    let report = sluice::check::check(&env, repository, routing);
    print!("{}", report.text);
    if report.problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
