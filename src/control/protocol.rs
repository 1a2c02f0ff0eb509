//! The control protocol: one JSON object per line each way, versioned.
//!
//! Request:  `{"v":1,"cmd":"status"}`, `{"v":1,"cmd":"reload"}`,
//!           `{"v":1,"cmd":"nudge","group":"2@vmx1","state":"MASTER"}`
//! Response: `{"v":1,"reply":"status","daemon":{...}}`, `{"v":1,"reply":"reloaded","message":"..."}`,
//!           `{"v":1,"reply":"nudged","known":true}`, `{"v":1,"reply":"error","message":"..."}`
//!
//! The version is checked before anything else, so a CLI and a daemon of different carpd
//! versions say so instead of misreading each other. Lines are bounded ([`MAX_REQUEST`],
//! [`MAX_RESPONSE`]). Pure: encoding and decoding only; `server.rs` and `client.rs` do I/O.

use serde::{Deserialize, Serialize};

use crate::carp::{CarpState, GroupId};
use crate::observe::daemon_view::DaemonView;

pub const VERSION: u32 = 1;

/// Longest request line the daemon reads (requests are tiny; this only stops abuse).
pub const MAX_REQUEST: usize = 64 * 1024;

/// Longest response line a client reads: a status of 255 groups with full histories is well
/// under 1 MiB.
pub const MAX_RESPONSE: usize = 8 * 1024 * 1024;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Request {
    /// The daemon's view, for `carpd status`.
    Status,
    /// Re-read the configuration and apply it; the reply says whether it was accepted.
    Reload,
    /// The devd hook: `group` may have changed, to `state` says devd (a hint, recorded but
    /// never believed: the daemon reads the kernel). `carpd reconcile` sends no state.
    Nudge {
        #[serde(with = "as_string")]
        group: GroupId,
        #[serde(default, skip_serializing_if = "Option::is_none", with = "opt_string")]
        state: Option<CarpState>,
    },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum Reply {
    Status {
        daemon: Box<DaemonView>,
    },
    Reloaded {
        message: String,
    },
    /// `known`: the configuration names the group (otherwise the daemon still watches it).
    Nudged {
        known: bool,
    },
    Error {
        message: String,
    },
}

#[derive(Serialize)]
struct Out<'a, T> {
    v: u32,
    #[serde(flatten)]
    body: &'a T,
}

#[derive(Deserialize)]
struct Version {
    v: Option<serde_json::Value>,
}

/// A line that is not a valid message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("not a JSON object: {0}")]
    NotJson(String),
    #[error(
        "protocol version {got} is not supported (this side speaks {VERSION}): the carpd CLI and the running daemon differ; restart the daemon after an upgrade"
    )]
    Version { got: String },
    #[error("invalid message: {0}")]
    Invalid(String),
    #[error("message longer than {limit} bytes")]
    TooLong { limit: usize },
}

pub fn encode_request(r: &Request) -> Vec<u8> {
    encode(r)
}

pub fn encode_reply(r: &Reply) -> Vec<u8> {
    encode(r)
}

fn encode<T: Serialize>(body: &T) -> Vec<u8> {
    let mut line = serde_json::to_vec(&Out { v: VERSION, body }).unwrap_or_else(|e| {
        // Plain data always serializes; keep the promise of a valid line regardless.
        format!(r#"{{"v":{VERSION},"reply":"error","message":"cannot encode: {e}"}}"#).into_bytes()
    });
    line.push(b'\n');
    line
}

pub fn decode_request(line: &[u8]) -> Result<Request, ProtocolError> {
    decode(line, MAX_REQUEST)
}

pub fn decode_reply(line: &[u8]) -> Result<Reply, ProtocolError> {
    decode(line, MAX_RESPONSE)
}

fn decode<T: for<'de> Deserialize<'de>>(line: &[u8], limit: usize) -> Result<T, ProtocolError> {
    if line.len() > limit {
        return Err(ProtocolError::TooLong { limit });
    }
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let v: Version =
        serde_json::from_slice(line).map_err(|e| ProtocolError::NotJson(e.to_string()))?;
    match v.v {
        Some(serde_json::Value::Number(n)) if n.as_u64() == Some(u64::from(VERSION)) => {}
        Some(other) => {
            return Err(ProtocolError::Version {
                got: other.to_string(),
            });
        }
        None => {
            return Err(ProtocolError::Version {
                got: "(missing)".into(),
            });
        }
    }
    serde_json::from_slice(line).map_err(|e| ProtocolError::Invalid(e.to_string()))
}

/// `Option` of [`as_string`].
mod opt_string {
    use std::fmt::Display;
    use std::str::FromStr;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<T: Display, S: Serializer>(v: &Option<T>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => s.collect_str(v),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, T, D>(d: D) -> Result<Option<T>, D::Error>
    where
        T: FromStr,
        T::Err: Display,
        D: Deserializer<'de>,
    {
        match Option::<String>::deserialize(d)? {
            Some(s) => s.parse().map(Some).map_err(serde::de::Error::custom),
            None => Ok(None),
        }
    }
}

/// Serde through `Display`/`FromStr`, for ids and states written as devd writes them.
mod as_string {
    use std::fmt::Display;
    use std::str::FromStr;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<T: Display, S: Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(v)
    }

    pub fn deserialize<'de, T, D>(d: D) -> Result<T, D::Error>
    where
        T: FromStr,
        T::Err: Display,
        D: Deserializer<'de>,
    {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn requests_round_trip_in_the_documented_shape() {
        let nudge = Request::Nudge {
            group: "2@vmx1".parse().unwrap(),
            state: Some(CarpState::Master),
        };
        let line = encode_request(&nudge);
        assert_eq!(
            line,
            b"{\"v\":1,\"cmd\":\"nudge\",\"group\":\"2@vmx1\",\"state\":\"MASTER\"}\n"
        );
        assert_eq!(decode_request(&line).unwrap(), nudge);
        assert_eq!(
            decode_request(b"{\"v\":1,\"cmd\":\"status\"}").unwrap(),
            Request::Status
        );
        assert_eq!(
            decode_request(b"{\"cmd\":\"reload\",\"v\":1}\n").unwrap(),
            Request::Reload
        );
        let bare = Request::Nudge {
            group: "3@em0".parse().unwrap(),
            state: None,
        };
        assert_eq!(
            encode_request(&bare),
            b"{\"v\":1,\"cmd\":\"nudge\",\"group\":\"3@em0\"}\n"
        );
        assert_eq!(decode_request(&encode_request(&bare)).unwrap(), bare);
    }

    #[test]
    fn replies_round_trip() {
        for r in [
            Reply::Nudged { known: true },
            Reply::Reloaded {
                message: "ok".into(),
            },
            Reply::Error {
                message: "no".into(),
            },
            Reply::Status {
                daemon: Box::default(),
            },
        ] {
            assert_eq!(decode_reply(&encode_reply(&r)).unwrap(), r);
        }
    }

    #[test]
    fn version_is_checked_first_and_errors_say_what_is_wrong() {
        let table: [(&[u8], &str); 7] = [
            (
                b"{\"v\":2,\"cmd\":\"status\"}",
                "protocol version 2 is not supported",
            ),
            (b"{\"cmd\":\"status\"}", "protocol version (missing)"),
            (
                b"{\"v\":\"1\",\"cmd\":\"status\"}",
                "protocol version \"1\"",
            ),
            (
                b"{\"v\":1,\"cmd\":\"launch\"}",
                "invalid message: unknown variant `launch`",
            ),
            (
                b"{\"v\":1,\"cmd\":\"nudge\",\"group\":\"2@\",\"state\":\"MASTER\"}",
                "invalid message",
            ),
            (
                b"{\"v\":1,\"cmd\":\"nudge\",\"group\":\"2@vmx1\",\"state\":\"UP\"}",
                "invalid message",
            ),
            (b"status", "not a JSON object"),
        ];
        for (line, want) in table {
            let e = decode_request(line).unwrap_err().to_string();
            assert!(e.contains(want), "{}: {e}", String::from_utf8_lossy(line));
        }
        let long = vec![b' '; MAX_REQUEST + 1];
        assert_eq!(
            decode_request(&long),
            Err(ProtocolError::TooLong { limit: MAX_REQUEST })
        );
    }

    proptest! {
        #[test]
        fn decoding_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode_request(&bytes);
            let _ = decode_reply(&bytes);
        }

        #[test]
        fn decoding_json_shaped_garbage_never_panics(
            v in prop_oneof![Just("1".to_string()), any::<i64>().prop_map(|n| n.to_string())],
            cmd in "[a-z_]{0,8}",
            group in "[0-9]{0,4}@?[a-z0-9.]{0,6}",
            state in "[A-Z]{0,7}",
        ) {
            let line = format!(r#"{{"v":{v},"cmd":"{cmd}","group":"{group}","state":"{state}"}}"#);
            let _ = decode_request(line.as_bytes());
        }
    }
}
