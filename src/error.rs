//! Error kinds that decide the process exit code.
//!
//! Exit codes: 0 success, 1 a check failed, 2 bad input (nothing was
//! spawned), 3 the environment cannot run the request (missing controller,
//! no KVM and no fallback, ...) or an internal failure.

/// Success.
pub const EXIT_OK: i32 = 0;
/// A check failed (the scheduler misbehaved, or a bug was found).
pub const EXIT_CHECK_FAILED: i32 = 1;
/// Bad input: a scenario file, a CLI value or an impossible combination.
pub const EXIT_BAD_INPUT: i32 = 2;
/// The environment cannot run the request, or runq failed internally.
pub const EXIT_ENVIRONMENT: i32 = 3;

/// Errors that carry their own exit code. Anything else maps to
/// [`EXIT_ENVIRONMENT`].
#[derive(Debug, thiserror::Error)]
pub enum RunqError {
    /// The input is wrong; the message names the field and the fix.
    #[error("{0}")]
    BadInput(String),
    /// The machine lacks something; the message says what and how to fix it.
    #[error("{0}")]
    Environment(String),
}

impl RunqError {
    /// Shorthand for a bad-input error as an `anyhow::Error`.
    pub fn bad_input(msg: impl Into<String>) -> anyhow::Error {
        RunqError::BadInput(msg.into()).into()
    }

    /// Shorthand for an environment error as an `anyhow::Error`.
    pub fn environment(msg: impl Into<String>) -> anyhow::Error {
        RunqError::Environment(msg.into()).into()
    }
}

/// The exit code for an error: the first `RunqError` in its chain decides.
pub fn exit_code_for(err: &anyhow::Error) -> i32 {
    for cause in err.chain() {
        if let Some(e) = cause.downcast_ref::<RunqError>() {
            return match e {
                RunqError::BadInput(_) => EXIT_BAD_INPUT,
                RunqError::Environment(_) => EXIT_ENVIRONMENT,
            };
        }
    }
    EXIT_ENVIRONMENT
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn bad_input_maps_to_two_even_when_wrapped() {
        let err = Err::<(), _>(RunqError::bad_input("workers: must be > 0"))
            .context("loading scenario")
            .unwrap_err();
        assert_eq!(exit_code_for(&err), EXIT_BAD_INPUT);
    }

    #[test]
    fn unclassified_maps_to_environment() {
        assert_eq!(exit_code_for(&anyhow::anyhow!("boom")), EXIT_ENVIRONMENT);
    }
}
