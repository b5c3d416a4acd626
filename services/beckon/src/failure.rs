//! Failed calls of the client commands (`beckon user`, `beckon journeys`) said plainly: what
//! went wrong in words, then what the server said, each cause once.

use std::error::Error as _;

/// `<plain reason>: <server message>: <causes>`, with no gRPC code names and no cause
/// repeated (a transport error's text often holds its source's text already). `url` is the
/// address the command called, named when what answered there was no Beckon service.
pub fn plain(e: &anyhow::Error, url: &str) -> String {
    let mut parts: Vec<String> = Vec::new();
    // A plain-text port called with https:// is said before the TLS library's own words.
    let mut not_ours = tls_to_plain_text(e, url);
    for cause in e.chain() {
        if not_ours && is_plain_text_answer(cause) {
            parts.push(format!(
                "{url} did not answer in TLS (is it a plain-text port? then its address \
                 starts with http://)"
            ));
        }
        if let Some(status) = cause.downcast_ref::<tonic::Status>() {
            // Checked first: the timeout's status also carries a transport error as its cause.
            if timed_out(status) {
                not_ours = true;
                parts.push(format!(
                    "{url} did not answer within {} s",
                    crate::grpc::CLIENT_CALL_TIMEOUT.as_secs()
                ));
                continue;
            }
            if spoke_no_grpc(status) {
                not_ours = true;
                parts.push(format!(
                    "{url} did not answer as a Beckon gRPC service (is it the right address \
                     and scheme?)"
                ));
                parts.push(status.message().to_string());
                continue;
            }
            match too_large(status) {
                Some(said) => parts.push(said),
                None => {
                    parts.extend(reason(status.code()).map(str::to_string));
                    parts.push(status.message().to_string());
                }
            }
        } else if cause.is::<tonic::transport::Error>() {
            // Its own text ("transport error") says nothing its causes do not say better. A
            // server that answered in another protocol is there, not unavailable.
            if !not_ours {
                parts.push(UNAVAILABLE.to_string());
            }
        } else {
            parts.push(cause.to_string());
        }
    }

    let mut said: Vec<String> = Vec::new();
    for part in parts {
        let part = part.trim().to_string();
        if part.is_empty() || said.iter().any(|s| s.contains(&part)) {
            continue;
        }
        said.push(part);
    }
    said.join(": ")
}

const UNAVAILABLE: &str = "the server is unavailable";

/// Whether an `https://` address answered in something other than TLS: the TLS library's
/// words for a first record that is no TLS record (a plain-text gRPC or HTTP port answering
/// the handshake). The connection failed, but nothing is unavailable: the scheme is wrong.
fn tls_to_plain_text(e: &anyhow::Error, url: &str) -> bool {
    url.starts_with("https://") && e.chain().any(is_plain_text_answer)
}

fn is_plain_text_answer(cause: &(dyn std::error::Error + 'static)) -> bool {
    let text = cause.to_string();
    text.contains("received corrupt message") && text.contains("InvalidContentType")
}

/// Whether a call failed because what answered at the address broke the connection instead of
/// answering in gRPC: a plain TCP or HTTP/1 server, a TLS port called without TLS. Tonic makes
/// such a status from its transport's error, which it keeps as the source; a status a server
/// sent has none. A connection that could not be made (nothing listening, a refused stream)
/// is UNAVAILABLE, and is said so.
fn spoke_no_grpc(status: &tonic::Status) -> bool {
    if status.code() == tonic::Code::Unavailable {
        return false;
    }
    let mut cause = status.source();
    while let Some(c) = cause {
        if c.is::<tonic::transport::Error>() {
            return true;
        }
        cause = c.source();
    }
    false
}

/// Whether the command's own call timeout ended the call: tonic reports it as CANCELLED with
/// the words of its timeout error, which no server sends.
fn timed_out(status: &tonic::Status) -> bool {
    status.code() == tonic::Code::Cancelled && status.message() == "Timeout expired"
}

/// An answer over a size limit, said in words: tonic's own status ("Error, decoded message
/// length too large: found N bytes, the limit is: M bytes") comes from this side of the call
/// when decoding, from the server when encoding.
fn too_large(status: &tonic::Status) -> Option<String> {
    if status.code() != tonic::Code::OutOfRange {
        return None;
    }
    let message = status.message();
    let (whose, rest) = if let Some(rest) =
        message.strip_prefix("Error, decoded message length too large: ")
    {
        ("this command accepts", rest)
    } else if let Some(rest) = message.strip_prefix("Error, encoded message length too large: ") {
        ("the server sends", rest)
    } else {
        return None;
    };
    let (found, limit) = rest.split_once(", the limit is: ")?;
    let found = found.strip_prefix("found ")?.strip_suffix(" bytes")?;
    let limit = limit.strip_suffix(" bytes")?;
    Some(format!(
        "the answer is too large: {found} bytes, more than the {limit} bytes {whose}"
    ))
}

/// What a code means to someone running the command; `None` where the server's message says
/// it all (a precondition, a field refused, a name not found).
fn reason(code: tonic::Code) -> Option<&'static str> {
    use tonic::Code;
    match code {
        Code::Unavailable => Some(UNAVAILABLE),
        Code::Unimplemented => {
            Some("that address does not serve this API (is it the right service's port?)")
        }
        Code::DeadlineExceeded => Some("the server did not answer in time"),
        Code::ResourceExhausted => Some("the server is overloaded; try again later"),
        Code::Aborted => Some("the call was interrupted; try again"),
        Code::Cancelled => Some("the call was cancelled"),
        Code::Unauthenticated => Some("the server wants credentials"),
        Code::PermissionDenied => Some("the server refused access"),
        Code::DataLoss => Some("stored data cannot be read"),
        Code::Internal | Code::Unknown => Some("the server failed"),
        Code::Ok
        | Code::InvalidArgument
        | Code::NotFound
        | Code::AlreadyExists
        | Code::FailedPrecondition
        | Code::OutOfRange => None,
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error as StdError;

    use super::*;

    const URL: &str = "http://127.0.0.1:4770";

    /// A cause chain in the shape tonic builds for a failed connection.
    #[derive(Debug)]
    struct Cause(&'static str, Option<Box<Cause>>);

    impl std::fmt::Display for Cause {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }

    impl StdError for Cause {
        fn source(&self) -> Option<&(dyn StdError + 'static)> {
            self.1.as_deref().map(|c| c as &(dyn StdError + 'static))
        }
    }

    #[test]
    fn codes_become_words_and_the_message_follows() {
        let e = anyhow::Error::from(tonic::Status::unavailable("redis: connection refused"));
        assert_eq!(
            plain(&e, URL),
            "the server is unavailable: redis: connection refused"
        );

        let e = anyhow::Error::from(tonic::Status::failed_precondition(
            "journey onboarding version 1 is published with other content",
        ));
        assert_eq!(
            plain(&e, URL),
            "journey onboarding version 1 is published with other content"
        );

        // A failure the server answered names no address: the server was the right one.
        let e = anyhow::Error::from(tonic::Status::internal("the store answered garbage"));
        assert_eq!(
            plain(&e, URL),
            "the server failed: the store answered garbage"
        );

        let e = anyhow::Error::from(tonic::Status::unimplemented(""));
        assert_eq!(
            plain(&e, URL),
            "that address does not serve this API (is it the right service's port?)"
        );
    }

    #[test]
    fn the_commands_own_timeout_names_the_address_and_the_wait() {
        // What tonic makes of its client timeout, a transport error kept as its cause.
        let e = anyhow::Error::from(tonic::Status::from_error(Box::new(tonic::TimeoutExpired(
            (),
        ))));
        assert_eq!(
            plain(&e, URL),
            "http://127.0.0.1:4770 did not answer within 60 s: Timeout expired"
        );

        // A server that cancelled the call itself is not a timeout of ours.
        let e = anyhow::Error::from(tonic::Status::cancelled("shutting down"));
        assert_eq!(plain(&e, URL), "the call was cancelled: shutting down");
    }

    #[test]
    fn an_answer_over_a_size_limit_is_said_in_words() {
        let e = anyhow::Error::from(tonic::Status::out_of_range(
            "Error, decoded message length too large: found 30317058 bytes, the limit is: \
             4194304 bytes",
        ));
        assert_eq!(
            plain(&e, URL),
            "the answer is too large: 30317058 bytes, more than the 4194304 bytes this \
             command accepts"
        );

        let e = anyhow::Error::from(tonic::Status::out_of_range(
            "Error, encoded message length too large: found 70000000 bytes, the limit is: \
             67108864 bytes",
        ));
        assert_eq!(
            plain(&e, URL),
            "the answer is too large: 70000000 bytes, more than the 67108864 bytes the server \
             sends"
        );

        // Any other out-of-range answer is the server's own words.
        let e = anyhow::Error::from(tonic::Status::out_of_range("page_size: at most 1000"));
        assert_eq!(plain(&e, URL), "page_size: at most 1000");
    }

    #[test]
    fn an_https_address_that_answers_in_plain_text_is_said_to_be_one() {
        let tls = Cause("received corrupt message of type InvalidContentType", None);
        let e = anyhow::Error::new(Cause("transport error", Some(Box::new(tls))))
            .context("connecting to https://127.0.0.1:4770");
        let said = plain(&e, "https://127.0.0.1:4770");
        assert_eq!(
            said,
            "connecting to https://127.0.0.1:4770: transport error: https://127.0.0.1:4770 did \
             not answer in TLS (is it a plain-text port? then its address starts with \
             http://): received corrupt message of type InvalidContentType"
        );
        assert!(!said.contains(UNAVAILABLE), "{said}");

        // The same words from an http:// address are someone else's trouble, said as they are.
        let tls = Cause("received corrupt message of type InvalidContentType", None);
        let e = anyhow::Error::new(tls);
        assert!(!plain(&e, URL).contains("did not answer in TLS"));
    }

    #[test]
    fn a_cause_is_said_once() {
        let io = Cause("Connection refused (os error 111)", None);
        let connect = Cause("tcp connect error", Some(Box::new(io)));
        // What tonic makes of a failed connection: the cause's text is the message too.
        let mut status = tonic::Status::unavailable("tcp connect error");
        status.set_source(std::sync::Arc::new(connect));
        let said = plain(&anyhow::Error::from(status), URL);
        assert_eq!(
            said,
            "the server is unavailable: tcp connect error: Connection refused (os error 111)"
        );

        // A context that repeats its cause, as a connection error's text often does.
        let e = anyhow::Error::new(Cause("tcp connect error", None)).context("tcp connect error");
        assert_eq!(plain(&e, URL), "tcp connect error");
    }
}
