//! Failed calls of the client commands (`beckon user`, `beckon journeys`) said plainly: what
//! went wrong in words, then what the server said, each cause once.

/// `<plain reason>: <server message>: <causes>`, with no gRPC code names and no cause
/// repeated (a transport error's text often holds its source's text already).
pub fn plain(e: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in e.chain() {
        if let Some(status) = cause.downcast_ref::<tonic::Status>() {
            parts.extend(reason(status.code()).map(str::to_string));
            parts.push(status.message().to_string());
        } else if cause.is::<tonic::transport::Error>() {
            // Its own text ("transport error") says nothing its causes do not say better.
            parts.push(UNAVAILABLE.to_string());
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
            plain(&e),
            "the server is unavailable: redis: connection refused"
        );

        let e = anyhow::Error::from(tonic::Status::failed_precondition(
            "journey onboarding version 1 is published with other content",
        ));
        assert_eq!(
            plain(&e),
            "journey onboarding version 1 is published with other content"
        );

        let e = anyhow::Error::from(tonic::Status::unimplemented(""));
        assert_eq!(
            plain(&e),
            "that address does not serve this API (is it the right service's port?)"
        );
    }

    #[test]
    fn a_cause_is_said_once() {
        let io = Cause("Connection refused (os error 111)", None);
        let connect = Cause("tcp connect error", Some(Box::new(io)));
        // What tonic makes of a failed connection: the cause's text is the message too.
        let mut status = tonic::Status::unavailable("tcp connect error");
        status.set_source(std::sync::Arc::new(connect));
        let said = plain(&anyhow::Error::from(status));
        assert_eq!(
            said,
            "the server is unavailable: tcp connect error: Connection refused (os error 111)"
        );

        // A context that repeats its cause, as a connection error's text often does.
        let e = anyhow::Error::new(Cause("tcp connect error", None)).context("tcp connect error");
        assert_eq!(plain(&e), "tcp connect error");
    }
}
