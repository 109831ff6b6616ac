//! The `pgroute` command: run the proxy, or check a configuration file.

use std::path::PathBuf;
use std::process::ExitCode;

use pgroute::config::{Config, LogFormat};

const USAGE: &str = "usage:
  pgroute --config proxy.toml [--log-format text|json]
                                      run the proxy (the format overrides [log] format)
  pgroute --check-config proxy.toml   validate the configuration and exit (0 valid, 1 not)
  pgroute explain --config proxy.toml [--application-name A] [--user U] [--database D] \"SQL\"
                                      where the statement would go, and why (offline)
  pgroute config-reference            every configuration key, its default and meaning (Markdown)
  pgroute --version";

enum Command {
    Run(PathBuf, Option<LogFormat>),
    Check(PathBuf),
    Explain { config: PathBuf, sql: String, app: String, user: String, database: String },
}

fn parse_explain(args: &[String]) -> Result<Command, String> {
    let (mut config, mut sql, mut app, mut user, mut database) = (None, None, String::new(), None, None);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || it.next().cloned().ok_or_else(|| format!("{a} needs a value\n{USAGE}"));
        match a.as_str() {
            "--config" | "-c" => config = Some(PathBuf::from(value()?)),
            "--application-name" => app = value()?,
            "--user" => user = Some(value()?),
            "--database" => database = Some(value()?),
            s if !s.starts_with("--") && sql.is_none() => sql = Some(s.to_string()),
            _ => return Err(USAGE.to_string()),
        }
    }
    let (Some(config), Some(sql)) = (config, sql) else {
        return Err(USAGE.to_string());
    };
    let user = user.unwrap_or_else(|| "app".to_string());
    let database = database.unwrap_or_else(|| user.clone());
    Ok(Command::Explain { config, sql, app, user, database })
}

fn parse_args() -> Result<Command, String> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().is_some_and(|a| a == "explain") {
        return parse_explain(&args[1..]);
    }
    let mut log_format = None;
    if let Some(at) = args.iter().position(|a| a == "--log-format") {
        let value = args.get(at + 1).ok_or_else(|| format!("--log-format needs a value\n{USAGE}"))?;
        log_format = Some(value.parse::<LogFormat>()?);
        args.drain(at..at + 2);
    }
    match args.as_slice() {
        [flag, path] if flag == "--config" || flag == "-c" => Ok(Command::Run(path.into(), log_format)),
        [flag, path] if flag == "--check-config" => Ok(Command::Check(path.into())),
        [cmd] if cmd == "config-reference" => {
            print!("{}", pgroute::config::reference::markdown());
            std::process::exit(0)
        }
        [flag] if flag == "--version" || flag == "-V" => {
            println!("pgroute {}", env!("CARGO_PKG_VERSION"));
            std::process::exit(0)
        }
        [flag] if flag == "--help" || flag == "-h" => {
            println!("{USAGE}");
            std::process::exit(0)
        }
        _ => Err(USAGE.to_string()),
    }
}

/// Runs until Ctrl-C / SIGINT (fast: exit now) or SIGTERM (smart: running transactions
/// finish, up to `[listen] shutdown_timeout`); SIGHUP reloads the configuration file (an
/// invalid one is reported and the running configuration kept).
async fn wait_for_signals(proxy: &pgroute::Proxy) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut hup), Ok(mut term)) = (signal(SignalKind::hangup()), signal(SignalKind::terminate())) else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    let mut console_shutdown = proxy.shared.shutdown.subscribe();
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return,
            _ = term.recv() => {
                tracing::info!("SIGTERM: finishing running transactions");
                return smart_shutdown(proxy).await;
            }
            // `changed`, not `wait_for`: its guard would be held (a read lock on the
            // flag) while `smart_shutdown` sets it again.
            _ = console_shutdown.changed() => return smart_shutdown(proxy).await,
            _ = hup.recv() => {
                let _ = proxy.shared.reload_file();
            }
        }
    }
}

/// SIGTERM or the console's SHUTDOWN: running transactions finish, then pgroute exits.
async fn smart_shutdown(proxy: &pgroute::Proxy) {
    let left = proxy.shutdown().await;
    if left > 0 {
        tracing::warn!(clients = left, "shutdown_timeout reached: closing the remaining clients");
    }
}

/// Logs to standard error at `RUST_LOG`'s level (default `info`), as text or JSON lines.
fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => fmt.init(),
        LogFormat::Json => fmt.json().with_current_span(false).init(),
    }
}

fn main() -> ExitCode {
    let command = match parse_args() {
        Ok(c) => c,
        Err(usage) => {
            eprintln!("{usage}");
            return ExitCode::from(2);
        }
    };
    if !matches!(command, Command::Run(..)) {
        init_logging(LogFormat::Text);
    }
    match command {
        Command::Explain { config, sql, app, user, database } => match Config::load(&config) {
            Ok(cfg) => {
                let ctx = pgroute::rules::Context { application_name: &app, user: &user, database: &database };
                print!("{}", pgroute::explain::explain(&cfg, &sql, &ctx));
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        },
        Command::Check(path) => match Config::load(&path).map_err(|e| e.to_string()).and_then(|c| {
            // The TLS files must load too.
            pgroute::tls::Acceptor::from_config(&c.tls).map(|_| c)
        }) {
            Ok(_) => {
                println!("{}: ok", path.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        },
        Command::Run(path, log_format) => {
            let config = match Config::load(&path) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::FAILURE;
                }
            };
            init_logging(log_format.unwrap_or(config.log.format));
            let mut builder = match config.listen.workers {
                1 => tokio::runtime::Builder::new_current_thread(),
                n => {
                    let mut b = tokio::runtime::Builder::new_multi_thread();
                    b.worker_threads(n);
                    b
                }
            };
            let runtime = match builder.enable_all().build() {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            runtime.block_on(async {
                match pgroute::start(config).await {
                    Ok(proxy) => {
                        tracing::info!(addr = %proxy.addr, "pgroute listening");
                        if let Some(m) = proxy.metrics_addr {
                            tracing::info!(addr = %m, "metrics at http://{m}/metrics");
                        }
                        if let Some(h) = proxy.health_addr {
                            tracing::info!(addr = %h, "health endpoints at http://{h}/live and /ready");
                        }
                        proxy.shared.set_config_path(path.clone());
                        wait_for_signals(&proxy).await;
                        tracing::info!("shutting down");
                        ExitCode::SUCCESS
                    }
                    Err(e) => {
                        eprintln!("cannot listen: {e}");
                        ExitCode::FAILURE
                    }
                }
            })
        }
    }
}
