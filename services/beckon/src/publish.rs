//! `beckon journeys lint|apply|list`: specs checked and published through a running journey
//! service (or `serve all`), so every user-state instance evaluates the same release.

use std::io::Write as _;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;
use beckon_proto::v1 as pb;
use beckon_proto::v1::journeys_client::JourneysClient;

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Action {
    /// Check specs against what is published, without publishing.
    Lint,
    /// Publish the new versions in the specs.
    Apply,
    /// List every published journey version.
    List,
}

/// Runs one action; the exit code is 1 when the specs have errors.
pub fn run(
    action: Action,
    path: Option<&Path>,
    url: &str,
    workspace: &str,
    tls_ca: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    let files = match (action, path) {
        (Action::List, _) => Vec::new(),
        (_, Some(p)) => beckon_journey::read_spec_files(p)?
            .into_iter()
            .map(|(name, yaml)| pb::SpecFile { name, yaml })
            .collect(),
        (_, None) => anyhow::bail!("a spec file or folder is needed"),
    };

    // A request past what the service reads would fail in the transport, in words that blame
    // the address; said here by its size instead, before connecting.
    let request = pb::LintRequest {
        workspace: workspace.to_string(),
        files,
    };
    let size = prost::Message::encoded_len(&request);
    let limit = beckon_journey_service::service::MAX_REQUEST_BYTES;
    if size > limit {
        anyhow::bail!(
            "the specs are {size} bytes encoded, more than the {limit} bytes the journey \
             service reads in one call"
        );
    }
    let files = request.files;

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let channel = crate::grpc::client_endpoint("--url", url, tls_ca)?
            .connect()
            .await
            .with_context(|| format!("connecting to {url}"))?;
        // Calls carry the caller's trace context, when there is one. The limits are the
        // service's: a request it reads, an answer as large as it sends.
        let mut client =
            JourneysClient::with_interceptor(channel, beckon_telemetry::TraceInterceptor)
                .max_encoding_message_size(beckon_journey_service::service::MAX_REQUEST_BYTES)
                .max_decoding_message_size(beckon_journey_service::service::MAX_RELEASE_BYTES);
        let workspace = workspace.to_string();
        let mut out = std::io::stdout().lock();
        match action {
            Action::Lint => {
                let r = client
                    .lint(pb::LintRequest { workspace, files })
                    .await?
                    .into_inner();
                for e in &r.errors {
                    writeln!(
                        out,
                        "{}:{}:{}: {}: {}",
                        e.file, e.line, e.column, e.field, e.message
                    )?;
                }
                if !r.errors.is_empty() {
                    return Ok(ExitCode::from(1));
                }
                writeln!(out, "ok: {} journeys, {} segments", r.journeys, r.segments)?;
            }
            Action::Apply => {
                let r = match client.apply(pb::ApplyRequest { workspace, files }).await {
                    Ok(r) => r.into_inner(),
                    Err(status) if status.code() == tonic::Code::InvalidArgument => {
                        writeln!(out, "{}", status.message())?;
                        return Ok(ExitCode::from(1));
                    }
                    Err(status) => return Err(status.into()),
                };
                for j in &r.published {
                    writeln!(out, "published journey {} version {}", j.id, j.version)?;
                }
                writeln!(
                    out,
                    "release {}: {} journeys, {} segments, {} policies new",
                    r.release,
                    r.published.len(),
                    r.segments,
                    r.policies
                )?;
            }
            Action::List => {
                let r = client
                    .list_journeys(pb::ListJourneysRequest { workspace })
                    .await?
                    .into_inner();
                for j in &r.journeys {
                    writeln!(
                        out,
                        "{}\tv{}\t{} steps\t{}",
                        j.id, j.version, j.steps, j.status
                    )?;
                }
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}
