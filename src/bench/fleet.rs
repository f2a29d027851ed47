//! Several instances of one collector (a fleet on one PostgreSQL database): which of them a
//! workload talks to.
//!
//! Only ingest spreads: a fleet's point is that its members share the writes. Each connection
//! sticks to one instance for the whole measurement, as a client behind a connection-level load
//! balancer would, and connections are dealt round-robin, so every instance gets its share
//! within one connection and a single instance sees exactly the load it always did.

use crate::client::Target;
use std::sync::Arc;

/// The base URLs of `--url`: one, or the instances of a fleet separated by commas.
pub(crate) fn split_urls(list: &str) -> Result<Vec<&str>, String> {
    let urls: Vec<&str> = list.split(',').map(str::trim).collect();
    if urls.iter().any(|u| u.is_empty()) {
        return Err(format!("--url has an empty entry (got {list:?})"));
    }
    Ok(urls)
}

/// Every instance of `--url`, in the order given (the order decides which is first and last).
pub(crate) fn targets(list: &str, token: Option<&str>, allow_remote: bool) -> Result<Vec<Arc<Target>>, String> {
    let mut fleet: Vec<Arc<Target>> = Vec::new();
    for url in split_urls(list)? {
        let t = Target::parse(url, token, allow_remote)?;
        // The same instance twice would count its share twice and call it a fleet.
        if let Some(same) = fleet.iter().find(|o| o.addr == t.addr) {
            return Err(format!("--url names {} twice ({} and {url})", t.addr, same.url));
        }
        fleet.push(Arc::new(t));
    }
    Ok(fleet)
}

/// The instance that connection `worker` of a spread workload sticks to.
pub(crate) fn instance_of(worker: usize, instances: usize) -> usize {
    worker % instances.max(1)
}

/// How many of `workers` connections each instance gets: `22/21/21` for 64 over 3.
pub(crate) fn shares(workers: usize, instances: usize) -> String {
    let mut n = vec![0usize; instances.max(1)];
    for w in 0..workers {
        n[instance_of(w, instances)] += 1;
    }
    n.iter().map(usize::to_string).collect::<Vec<_>>().join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_lists() {
        assert_eq!(split_urls("http://127.0.0.1:4317").unwrap(), ["http://127.0.0.1:4317"]);
        assert_eq!(
            split_urls("http://127.0.0.1:4401, http://127.0.0.1:4402/ ,http://127.0.0.1:4403").unwrap(),
            ["http://127.0.0.1:4401", "http://127.0.0.1:4402/", "http://127.0.0.1:4403"]
        );
        for bad in ["", ",", "http://127.0.0.1:4401,", "http://127.0.0.1:4401,,http://127.0.0.1:4402"] {
            assert!(split_urls(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn targets_keep_their_order_and_refuse_repeats() {
        let fleet =
            targets("http://127.0.0.1:4401,http://127.0.0.1:4402/,http://[::1]:4401", Some("t"), false).unwrap();
        let urls: Vec<&str> = fleet.iter().map(|t| t.url.as_str()).collect();
        assert_eq!(urls, ["http://127.0.0.1:4401", "http://127.0.0.1:4402", "http://[::1]:4401"]);
        assert!(fleet.iter().all(|t| t.auth.as_deref() == Some("Bearer t")));
        let one = targets("http://127.0.0.1:4317", None, false).unwrap();
        assert_eq!(one.len(), 1);
        assert!(targets("http://127.0.0.1:4401,http://127.0.0.1:4401/", None, false).is_err());
        // Every URL is checked as a lone --url is: a remote member needs --allow-remote too.
        assert!(targets("http://127.0.0.1:4401,http://10.1.2.3:4401", None, false).is_err());
        assert!(targets("http://127.0.0.1:4401,127.0.0.1:4402", None, false).is_err());
    }

    #[test]
    fn workers_are_dealt_round_robin() {
        assert_eq!(shares(64, 3), "22/21/21");
        assert_eq!(shares(4, 3), "2/1/1");
        assert_eq!(shares(16, 2), "8/8");
        assert_eq!(shares(1, 3), "1/0/0");
        assert_eq!(shares(64, 1), "64");
        assert_eq!((0..5).map(|w| instance_of(w, 3)).collect::<Vec<_>>(), [0, 1, 2, 0, 1]);
        assert!((0..100).all(|w| instance_of(w, 1) == 0));
    }
}
