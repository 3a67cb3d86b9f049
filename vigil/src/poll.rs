//! The one way vigil waits: poll a check until it yields or a deadline
//! passes, keeping the last reason it gave for the error; or, for one
//! object, watch it (kube-runtime's `await_condition`) so the wait ends the
//! moment the object changes. `up`'s steps and the end-to-end tests use both.

use std::{
    fmt::Display,
    future::Future,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use kube::{Api, Resource, runtime::wait::await_condition};
use serde::de::DeserializeOwned;

/// How often a polled check runs unless its caller says otherwise.
pub const EVERY: Duration = Duration::from_millis(500);

/// A wait that ran out of time.
#[derive(Debug, thiserror::Error)]
#[error("{what}: not within {}s (last: {last})", waited.as_secs())]
pub struct Timeout {
    pub what: String,
    pub waited: Duration,
    /// The last reason the check gave for not being done.
    pub last: String,
}

/// Runs `check` every `every` until it returns `Ok`; after `limit`, fails
/// with the last error it returned.
pub async fn until<T, E, F, Fut>(
    what: impl Into<String>,
    limit: Duration,
    every: Duration,
    mut check: F,
) -> Result<T, Timeout>
where
    E: Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let deadline = Instant::now() + limit;
    loop {
        let last = match check().await {
            Ok(value) => return Ok(value),
            Err(pending) => pending.to_string(),
        };
        if Instant::now() + every > deadline {
            return Err(Timeout { what: what.into(), waited: limit, last });
        }
        tokio::time::sleep(every).await;
    }
}

/// [`until`] for checks that say "not yet" with `Ok(None)`.
pub async fn until_some<T, E, F, Fut>(
    what: impl Into<String>,
    limit: Duration,
    mut check: F,
) -> Result<T, Timeout>
where
    E: Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>, E>>,
{
    until(what, limit, EVERY, || {
        let pending = check();
        async move {
            match pending.await {
                Ok(Some(value)) => Ok(value),
                Ok(None) => Err("not yet".to_owned()),
                Err(e) => Err(e.to_string()),
            }
        }
    })
    .await
}

/// Watches the object `name` until `check` accepts it (an absent object is
/// `None`); fails after `limit` with the last reason `check` gave.
pub async fn watch_until<K>(
    api: Api<K>,
    name: &str,
    what: impl Into<String>,
    limit: Duration,
    check: impl Fn(Option<&K>) -> Result<(), String> + Send + 'static,
) -> Result<(), Timeout>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
{
    let last = Arc::new(Mutex::new(format!("{name}: not seen yet")));
    let seen = last.clone();
    let condition = move |object: Option<&K>| match check(object) {
        Ok(()) => true,
        Err(reason) => {
            *seen.lock().expect("not poisoned") = reason;
            false
        }
    };
    let waited = tokio::time::timeout(limit, await_condition(api, name, condition)).await;
    match waited {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(Timeout { what: what.into(), waited: limit, last: format!("watch failed: {e}") }),
        Err(_) => {
            let last = last.lock().expect("not poisoned").clone();
            Err(Timeout { what: what.into(), waited: limit, last })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn yields_the_first_success() {
        let mut tries = 0;
        let value = until("counting", Duration::from_secs(5), Duration::from_millis(1), || {
            tries += 1;
            let now = tries;
            async move { if now >= 3 { Ok(now) } else { Err(format!("only {now}")) } }
        })
        .await
        .unwrap();
        assert_eq!(value, 3);
    }

    #[tokio::test]
    async fn a_timeout_keeps_the_last_reason() {
        let err = until_some("the impossible", Duration::from_millis(20), || async {
            Err::<Option<()>, _>("still impossible")
        })
        .await
        .unwrap_err();
        assert_eq!(err.to_string(), "the impossible: not within 0s (last: still impossible)");
    }
}
