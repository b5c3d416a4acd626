//! `beckon`: replay event files through journeys, lint specs, and (later) serve.

use std::io::{IsTerminal as _, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use beckon::replay::{self, ReplayConfig};
use beckon_core::{Duration, Ts};
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

/// Replay and the services allocate many small, short-lived values per event (strings,
/// maps, effect lists); mimalloc's thread-local free lists serve those with far fewer
/// instructions than the system allocator and do not pile up fragmented arenas per thread.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "beckon",
    version,
    about = "Real-time, behavior-driven journeys"
)]
struct Cli {
    /// Log filter, e.g. `info` or `beckon_user_state=debug` (default: `warn`; `info` for
    /// `serve`).
    #[arg(long, env = "BECKON_LOG", global = true)]
    log: Option<String>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Replay a Segment-spec JSON-lines file through journeys on a virtual clock.
    Replay(ReplayArgs),
    /// Run a service (or all of them) until SIGTERM.
    Serve {
        #[arg(value_enum)]
        service: beckon::serve::Service,
        #[command(flatten)]
        args: Box<beckon::serve::ServeArgs>,
        /// Print the effective configuration (secrets hidden) and exit.
        #[arg(long)]
        print_config: bool,
    },
    /// Read, export or forget a user, or list a segment's members and the segment sizes,
    /// through a running UserState service.
    User {
        #[arg(value_enum)]
        action: UserAction,
        /// The user id; for `members`, the segment id; none for `sizes`.
        id: Option<String>,
        /// UserState (or `serve all`) address.
        #[arg(long, env = "BECKON_URL", default_value = "http://127.0.0.1:50051")]
        url: String,
        #[arg(long, default_value = "default")]
        workspace: String,
        /// PEM certificates of authorities trusted for an `https://` URL besides the public
        /// web roots.
        #[arg(long, env = "BECKON_TLS_CA")]
        tls_ca: Option<PathBuf>,
        /// `members`: users per page (the service caps it at 1000).
        #[arg(long, default_value_t = 100)]
        page_size: u32,
        /// `members`: start at this page, as printed after the previous one; without it,
        /// every page is listed.
        #[arg(long)]
        page_token: Option<String>,
    },
    /// Send synthetic users' events to an Ingest service and report acknowledgements.
    Loadgen(beckon::loadgen::LoadArgs),
    /// Measure throughput, latency and memory against references taken in the same run.
    Bench(beckon::bench::BenchArgs),
    /// Check journey and segment specs; exits non-zero on any error.
    Lint {
        /// A spec file or a folder of them.
        path: PathBuf,
    },
    /// Print one user's decisions in order, with reasons, by replaying their events.
    Explain {
        /// The user id.
        user: String,
        /// Segment-spec JSON lines, plain or gzip-compressed (read twice, so a file, not a
        /// pipe).
        #[arg(long)]
        events: PathBuf,
        /// Folder (or file) of journey, segment and policy specs.
        #[arg(long)]
        journeys: PathBuf,
        #[arg(long, default_value = "default")]
        workspace: String,
        /// How long virtual time runs on after the user's last event.
        #[arg(long, default_value = "7d")]
        drain: Duration,
        #[command(flatten)]
        limits: beckon::serve::config::StateLimitArgs,
    },
    /// Check, publish or list definitions through a running journey service.
    Journeys {
        #[arg(value_enum)]
        action: beckon::publish::Action,
        /// A spec file or a folder of them (lint and apply).
        path: Option<PathBuf>,
        /// Journey service (or `serve all`) address.
        #[arg(long, env = "BECKON_URL", default_value = "http://127.0.0.1:50051")]
        url: String,
        #[arg(long, default_value = "default")]
        workspace: String,
        /// PEM certificates of authorities trusted for an `https://` URL besides the public
        /// web roots.
        #[arg(long, env = "BECKON_TLS_CA")]
        tls_ca: Option<PathBuf>,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum UserAction {
    Get,
    Export,
    Forget,
    Explain,
    /// The members of a segment, one user id a line.
    Members,
    /// Members per segment.
    Sizes,
}

impl UserAction {
    /// The action as written on the command line.
    fn name(self) -> String {
        value_name(&self)
    }
}

/// A value as written on the command line.
fn value_name(value: &impl clap::ValueEnum) -> String {
    value
        .to_possible_value()
        .map(|v| v.get_name().to_string())
        .unwrap_or_default()
}

#[derive(clap::Args)]
struct ReplayArgs {
    /// Segment-spec JSON lines (track, identify, alias, page, screen): a file or a named
    /// pipe, or `-` for standard input; gzip-compressed input is recognised and read as is.
    #[arg(long)]
    events: PathBuf,
    /// Folder of journey specs.
    #[arg(long)]
    journeys: PathBuf,
    /// Where to write the JSON report.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Where to write one JSON object per rendered message.
    #[arg(long)]
    messages: Option<PathBuf>,
    /// Workspace the events belong to; journeys of other workspaces are ignored.
    #[arg(long, default_value = "default")]
    workspace: String,
    /// How long virtual time runs on after the last event, so pending timers fire.
    #[arg(long, default_value = "7d")]
    drain: Duration,
    /// Stop virtual time at this instant (RFC 3339) instead.
    #[arg(long)]
    until: Option<String>,
    /// Worker threads (1 to 256; each is an OS thread with its own event loop); the default
    /// is one per core.
    #[arg(long, allow_negative_numbers = true,
          value_parser = clap::value_parser!(u16).range(1..=256))]
    workers: Option<u16>,
    /// Never draw a progress bar.
    #[arg(long)]
    no_progress: bool,
    /// Stop the actors of users idle this long in event time (their state is kept in the
    /// store and reloaded on their next event); `0` keeps every actor to the end.
    #[arg(long, default_value = "24h")]
    idle: Duration,
    #[command(flatten)]
    limits: beckon::serve::config::StateLimitArgs,
}

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let mut cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    if let (Command::Serve { args, .. }, Some(serve)) =
        (&mut cli.command, matches.subcommand_matches("serve"))
    {
        args.note_environment(serve);
    }

    // Services log through the telemetry pipeline (trace ids, OTLP); the rest log plainly.
    if !matches!(cli.command, Command::Serve { .. }) {
        init_logging(cli.log.as_deref().unwrap_or("warn"));
    }

    // Client commands say their failures plainly, under the command's name, naming the
    // address they called when what answered there was no Beckon service.
    let client = match &cli.command {
        Command::User { action, url, .. } => Some((format!("user {}", action.name()), url.clone())),
        Command::Journeys { action, url, .. } => {
            Some((format!("journeys {}", value_name(action)), url.clone()))
        }
        _ => None,
    };

    let result = match cli.command {
        Command::Replay(args) => run_replay(args),
        Command::Lint { path } => run_lint(&path),
        Command::Loadgen(args) => run_loadgen(&args),
        Command::Bench(args) => beckon::bench::run(&args).map(|()| ExitCode::SUCCESS),
        Command::User {
            action,
            id,
            url,
            workspace,
            tls_ca,
            page_size,
            page_token,
        } => match action {
            UserAction::Members | UserAction::Sizes => {
                let paging = (page_size, page_token);
                let peer = (url.as_str(), tls_ca.as_deref());
                run_segments(action, id.as_deref(), peer, &workspace, paging)
            }
            _ => match id {
                Some(user) => run_user(action, &user, (&url, tls_ca.as_deref()), &workspace),
                None => Err(anyhow::anyhow!("this action needs a user id")),
            },
        },
        Command::Serve {
            service,
            args,
            print_config,
        } => run_serve(service, &args, cli.log.as_deref(), print_config),
        Command::Journeys {
            action,
            path,
            url,
            workspace,
            tls_ca,
        } => beckon::publish::run(action, path.as_deref(), &url, &workspace, tls_ca.as_deref()),
        Command::Explain {
            user,
            events,
            journeys,
            workspace,
            drain,
            limits,
        } => limits.resolve().and_then(|limits| {
            run_explain(&beckon::explain::ExplainConfig {
                user: &user,
                events: &events,
                journeys: &journeys,
                workspace: &workspace,
                drain,
                limits,
            })
        }),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            let said = match &client {
                Some((command, url)) => {
                    format!("beckon {command}: {}", beckon::failure::plain(&e, url))
                }
                None => format!("error: {e:#}"),
            };
            let _ = writeln!(std::io::stderr(), "{said}");
            ExitCode::from(2)
        }
    }
}

fn init_logging(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    // Colour only for a person at a terminal; a file or a pipe gets plain text, as the
    // services write it.
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}

fn run_replay(args: ReplayArgs) -> anyhow::Result<ExitCode> {
    if empty_spec_folder(&args.journeys)? {
        return Ok(ExitCode::from(1));
    }
    let mut config = ReplayConfig::new(args.events, args.journeys);
    config.limits = args.limits.resolve()?;
    config.workspace = args.workspace;
    config.drain = args.drain;
    config.progress = !args.no_progress;
    config.idle = (args.idle.as_millis() > 0).then_some(args.idle);
    if let Some(w) = args.workers {
        config.workers = usize::from(w);
    }
    if let Some(until) = &args.until {
        config.until = Some(Ts::parse_rfc3339(until).context("--until")?);
    }

    let outcome = replay::run(&config)?;

    for path in [&args.messages, &args.report].into_iter().flatten() {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
    }

    if let Some(path) = &args.messages {
        let mut out = std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        );
        let written: std::io::Result<()> = (|| {
            for m in &outcome.messages {
                serde_json::to_writer(&mut out, &replay::message_json(m))?;
                out.write_all(b"\n")?;
            }
            out.flush()
        })();
        written.with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &args.report {
        let json = serde_json::to_vec_pretty(&outcome.report)?;
        std::fs::write(path, json).with_context(|| format!("writing {}", path.display()))?;
    }

    std::io::stdout().write_all(outcome.report.summary().as_bytes())?;
    Ok(ExitCode::SUCCESS)
}

fn run_loadgen(args: &beckon::loadgen::LoadArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let clock: std::sync::Arc<dyn beckon_core::Clock> =
        std::sync::Arc::new(beckon_core::SystemClock);
    let report = runtime.block_on(beckon::loadgen::run(&args.config(), clock))?;
    std::io::stdout().write_all(report.render().as_bytes())?;
    Ok(if report.acked == 0 && report.sent > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn run_serve(
    service: beckon::serve::Service,
    args: &beckon::serve::ServeArgs,
    log: Option<&str>,
    print_config: bool,
) -> anyhow::Result<ExitCode> {
    let settings = beckon::serve::Settings::resolve(args)?;
    let name = format!("beckon-{}", service.name());
    let mut telemetry = beckon_telemetry::TelemetryConfig::from_env(&name)?;
    // `--log` names the filter as `BECKON_LOG` does, and wins over it.
    if let Some(filter) = log {
        telemetry.log_filter = filter.to_string();
    }
    telemetry.env_filter()?;
    // Before the admin port is taken. What the start would refuse, `--print-config` refuses
    // too: a printed configuration starts.
    beckon::serve::preflight(service, &settings)?;
    if print_config {
        std::io::stdout().write_all(settings.printable().as_bytes())?;
        return Ok(ExitCode::SUCCESS);
    }
    let clock: std::sync::Arc<dyn beckon_core::Clock> =
        std::sync::Arc::new(beckon_core::SystemClock);
    let guard = beckon_telemetry::init(telemetry, clock)?;
    beckon::grpc::record_rpcs_with(guard.metrics());

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        // The admin port serves /metrics for Prometheus, apart from the gRPC port.
        if let Some(addr) = &settings.admin_listen {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding admin {addr}"))?;
            let bound = listener.local_addr()?;
            writeln!(std::io::stdout(), "admin {bound}")?;
            let router = guard.metrics_endpoint().router();
            tokio::spawn(async move {
                let stop = beckon::grpc::termination();
                if let Err(e) = beckon_telemetry::serve_admin(listener, router, stop).await {
                    tracing::warn!(error = %e, "admin endpoint stopped");
                }
            });
        }
        beckon::serve::run(service, settings, beckon::grpc::termination()).await
    })?;
    drop(guard);
    Ok(ExitCode::SUCCESS)
}

fn run_explain(config: &beckon::explain::ExplainConfig<'_>) -> anyhow::Result<ExitCode> {
    // An id no event may carry is a mistake in the command, not a user who happens to have
    // no events: refused as a usage error, by the rule ingest applies.
    if let Some(problem) = beckon_core::ids::id_problem(config.user) {
        writeln!(
            std::io::stderr(),
            "beckon explain: USER {:?} is not a user id: {problem}",
            config.user
        )?;
        return Ok(ExitCode::from(2));
    }

    // Unknown, as `beckon user explain` says of a user the service does not have.
    let Some(explained) = beckon::explain::explain(config)? else {
        writeln!(
            std::io::stderr(),
            "beckon explain: no user {:?}: no event in {} is theirs",
            config.user,
            config.events.display()
        )?;
        return Ok(ExitCode::from(1));
    };
    if explained.decisions.is_empty() {
        writeln!(std::io::stderr(), "no decisions for user {}", config.user)?;
    }
    let mut out = beckon::explain::render(&explained.decisions);
    for note in &explained.notes {
        out += &format!("note: {note}\n");
    }
    std::io::stdout().write_all(out.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}

fn run_user(
    action: UserAction,
    user: &str,
    (url, tls_ca): (&str, Option<&std::path::Path>),
    workspace: &str,
) -> anyhow::Result<ExitCode> {
    use beckon_proto::v1::GetUserRequest;
    use beckon_proto::v1::user_state_client::UserStateClient;

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let answer = runtime.block_on(async {
        let channel = beckon::grpc::client_endpoint("--url", url, tls_ca)?
            .connect()
            .await
            .with_context(|| format!("connecting to {url}"))?;
        // Calls carry the caller's trace context, when there is one.
        let mut client =
            UserStateClient::with_interceptor(channel, beckon_telemetry::TraceInterceptor)
                .max_decoding_message_size(beckon_user_state::grpc::MAX_ANSWER_BYTES);
        let req = GetUserRequest {
            workspace: workspace.to_string(),
            user_id: user.to_string(),
        };
        let text = match action {
            UserAction::Get => {
                let view = client.get_user(req).await?.into_inner();
                beckon::user_view::render(&view)
            }
            UserAction::Export => client.export_user(req).await?.into_inner().json + "\n",
            UserAction::Members | UserAction::Sizes => {
                anyhow::bail!("members and sizes are about segments, not one user")
            }
            UserAction::Forget => {
                let r = client.forget_user(req).await?.into_inner();
                format!("forgotten: {} keys removed\n", r.keys_removed)
            }
            UserAction::Explain => {
                let e = client.explain(req).await?.into_inner();
                let notes = e.notes.iter().map(|n| format!("note: {n}\n"));
                e.decisions
                    .iter()
                    .map(|d| {
                        let at = d
                            .at
                            .as_ref()
                            .map(|t| Ts(beckon_proto::convert::timestamp_to_millis(t)).to_string());
                        format!(
                            "{} {} {} {} {}\n",
                            at.unwrap_or_default(),
                            d.journey,
                            d.step,
                            d.kind,
                            d.reason
                        )
                    })
                    .chain(notes)
                    .collect()
            }
        };
        anyhow::Ok(text)
    });
    let text = match answer {
        Ok(text) => text,
        // A user the service does not have is an answer, not a failure of the command: said
        // plainly, with the exit code `members` gives a segment nobody defined.
        Err(e) => match e.downcast_ref::<tonic::Status>() {
            Some(status) if status.code() == tonic::Code::NotFound => {
                let name = action.name();
                writeln!(
                    std::io::stderr(),
                    "beckon user {name}: {}",
                    status.message()
                )?;
                return Ok(ExitCode::from(1));
            }
            _ => return Err(e),
        },
    };
    std::io::stdout().write_all(text.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}

/// `beckon user members SEGMENT` and `beckon user sizes`.
fn run_segments(
    action: UserAction,
    segment: Option<&str>,
    (url, tls_ca): (&str, Option<&std::path::Path>),
    workspace: &str,
    (page_size, page_token): (u32, Option<String>),
) -> anyhow::Result<ExitCode> {
    use beckon_proto::v1::user_state_client::UserStateClient;
    use beckon_proto::v1::{ListSegmentMembersRequest, SegmentSizesRequest};

    // Sizes are of every segment; a name given here would be silently ignored.
    if let (UserAction::Sizes, Some(extra)) = (action, segment) {
        writeln!(
            std::io::stderr(),
            "beckon user sizes: takes no segment or user, got {extra:?}; \
             `beckon user members SEGMENT` lists one segment"
        )?;
        return Ok(ExitCode::from(2));
    }

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let channel = beckon::grpc::client_endpoint("--url", url, tls_ca)?
            .connect()
            .await
            .with_context(|| format!("connecting to {url}"))?;
        let mut client = UserStateClient::new(channel)
            .max_decoding_message_size(beckon_user_state::grpc::MAX_ANSWER_BYTES);
        let mut out = std::io::stdout().lock();
        let UserAction::Members = action else {
            let request = SegmentSizesRequest {
                workspace: workspace.to_string(),
            };
            let sizes = client.segment_sizes(request).await?.into_inner().sizes;
            let sorted: std::collections::BTreeMap<_, _> = sizes.into_iter().collect();
            for (segment, n) in sorted {
                writeln!(out, "{segment}\t{n}")?;
            }
            return anyhow::Ok(ExitCode::SUCCESS);
        };

        let Some(segment) = segment else {
            writeln!(std::io::stderr(), "beckon user members: name the segment")?;
            return Ok(ExitCode::from(2));
        };
        // With a token, one page and where the next starts; without, every page.
        let one_page = page_token.is_some();
        let mut token = page_token.unwrap_or_default();
        let mut listed = 0;
        loop {
            let request = ListSegmentMembersRequest {
                workspace: workspace.to_string(),
                segment: segment.to_string(),
                page_size,
                page_token: token,
            };
            let page = match client.list_segment_members(request).await {
                Ok(page) => page.into_inner(),
                Err(status) if status.code() == tonic::Code::NotFound => {
                    writeln!(
                        std::io::stderr(),
                        "beckon user members: {}",
                        status.message()
                    )?;
                    return Ok(ExitCode::from(1));
                }
                Err(status) => return Err(status.into()),
            };
            listed += page.user_ids.len();
            for user in &page.user_ids {
                writeln!(out, "{user}")?;
            }
            token = page.next_page_token;
            if token.is_empty() {
                break;
            }
            if one_page {
                writeln!(std::io::stderr(), "next page: --page-token {token}")?;
                break;
            }
        }
        // Said apart from the list, so standard output stays one user id a line.
        if listed == 0 && !one_page {
            writeln!(std::io::stderr(), "segment {segment:?} has no members")?;
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// Whether `path` is a folder holding no spec file, said on stderr when it is: a mistyped
/// folder would otherwise pass as a spec set with nothing to check.
fn empty_spec_folder(path: &std::path::Path) -> anyhow::Result<bool> {
    if !path.is_dir() || !beckon_journey::spec_paths(path)?.is_empty() {
        return Ok(false);
    }
    writeln!(
        std::io::stderr(),
        "error: {}: a folder with no .yaml or .yml files",
        path.display()
    )?;
    Ok(true)
}

fn run_lint(path: &std::path::Path) -> anyhow::Result<ExitCode> {
    if empty_spec_folder(path)? {
        return Ok(ExitCode::from(1));
    }
    let (counts, errors) = beckon::lint::lint(path)?;
    let mut err = std::io::stderr().lock();
    for e in &errors {
        writeln!(err, "{e}")?;
    }
    if errors.is_empty() {
        let (journeys, segments, policies) = counts;
        writeln!(
            std::io::stdout(),
            "ok: {journeys} journey(s), {segments} segment(s), {policies} policy(ies)"
        )?;
        Ok(ExitCode::SUCCESS)
    } else {
        writeln!(err, "{} error(s)", errors.len())?;
        Ok(ExitCode::from(1))
    }
}
