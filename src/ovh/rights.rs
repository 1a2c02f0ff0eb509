//! What a credential may do, checked before a failover needs it: the calls a claim makes for
//! one failover IP, matched against the consumer key's access rules the way OVH matches them,
//! and the rules (or IAM actions) to grant when some are missing. Pure: no I/O.
//!
//! Why: a claim that may DELETE the IP from the peer's vMAC but not POST it on its own leaves
//! the IP bound to no one until a person fixes the credential. Readiness runs this while
//! BACKUP, the daemon refuses to start such a claim, and `carpd check --online` prints the
//! rules to grant.
//!
//! Matching (what the API documents and its clients rely on): a rule is a method and a path
//! pattern; the method must be equal; in the path, `*` matches any run of characters, `/`
//! included (python-ovh's `add_recursive_rules` grants `/x` and `/x/*` for "everything under
//! /x"), everything else literally; the pattern must cover the whole path (query string
//! excluded). A call is granted when any rule matches. Verified: the rule shape and `*` in
//! OVH's docs and clients. Assumed (live account needed): whether an IP block in a path is
//! matched encoded (`%2F`) or decoded: carpd's suggested rules use `/ip/*`, which covers both.
//!
//! IAM action names (OAuth2 service accounts) come from OVH's published API schema
//! (`iamActions` of each operation); `ip:apiovh:get` for `GET /ip/{ip}` is assumed by the
//! naming pattern of its neighbours.

use serde::Deserialize;

use super::api::{encode_block, vaddr_path, vmac_path};
use super::failover::{MoveTarget, VmacTarget};

/// One access rule of a consumer key (`GET /auth/currentCredential` → `rules`).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct Rule {
    pub method: String,
    pub path: String,
}

/// `GET /auth/currentCredential`: the part carpd reads (unknown fields ignored).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct Credential {
    #[serde(default, rename = "credentialId")]
    pub credential_id: Option<u64>,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub expiration: Option<String>,
    #[serde(default)]
    pub rules: Vec<Rule>,
}

/// The path of the credential read.
pub const CURRENT_CREDENTIAL: &str = "/auth/currentCredential";

/// One call a claim makes, with the rule and IAM action that grant it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Need {
    pub method: &'static str,
    /// A concrete path as carpd sends it (a representative task id / MAC where unknown).
    pub path: String,
    /// The access rule pattern to grant (service names stay: rules should name the server).
    pub rule: String,
    pub iam_action: &'static str,
    /// What the claim does with it.
    pub why: &'static str,
}

impl Need {
    /// `POST /dedicated/server/ns1/virtualMac/*/virtualAddress`.
    pub fn rule_line(&self) -> String {
        format!("{} {}", self.method, self.rule)
    }

    /// What an operator reads in status, logs and `check`.
    pub fn describe(&self) -> String {
        format!(
            "{} (to {}; IAM action {})",
            self.rule_line(),
            self.why,
            self.iam_action
        )
    }
}

/// A stand-in for "some other vMAC" when the holder is unknown: a locally administered
/// unicast address no OVH vMAC has, so a rule naming one MAC literally does not cover it.
pub const ANY_OTHER_MAC: &str = "02:00:5e:00:53:01";

fn need(
    method: &'static str,
    path: String,
    rule: String,
    iam_action: &'static str,
    why: &'static str,
) -> Need {
    Need {
        method,
        path,
        rule,
        iam_action,
        why,
    }
}

/// The IAM actions of every call of a claim (OAuth2 service accounts), as OVH names them in
/// its API schemas (`iamActions`): the vMAC scenario, then the IP-move scenario. Listed in
/// refusals and in the documentation; a test keeps them equal to the needs below.
pub const IAM_ACTIONS_VMAC: &[&str] = &[
    "dedicatedServer:apiovh:virtualMac/get",
    "dedicatedServer:apiovh:virtualMac/virtualAddress/get",
    "dedicatedServer:apiovh:virtualMac/virtualAddress/delete",
    "dedicatedServer:apiovh:virtualMac/virtualAddress/create",
    "dedicatedServer:apiovh:task/get",
];
pub const IAM_ACTIONS_MOVE: &[&str] = &["ip:apiovh:get", "ip:apiovh:task/get", "ip:apiovh:move"];

/// Every call of a vMAC claim of `t`. `holder` is the vMAC the IP was last seen on (the
/// DELETE goes there); unknown or ours: any other vMAC.
pub fn vmac_needs(t: &VmacTarget, holder: Option<&str>) -> Vec<Need> {
    let sn = &t.service;
    let other = holder
        .filter(|h| !h.eq_ignore_ascii_case(&t.mac))
        .unwrap_or(ANY_OTHER_MAC)
        .to_lowercase();
    let list = vmac_path(sn);
    vec![
        need(
            "GET",
            list.clone(),
            list.clone(),
            "dedicatedServer:apiovh:virtualMac/get",
            "list the server's virtual MACs",
        ),
        need(
            "GET",
            vaddr_path(sn, &other),
            format!("{list}/*"),
            "dedicatedServer:apiovh:virtualMac/virtualAddress/get",
            "read which vMAC holds the IP",
        ),
        need(
            "GET",
            vaddr_path(sn, &t.mac),
            format!("{list}/*"),
            "dedicatedServer:apiovh:virtualMac/virtualAddress/get",
            "read this node's vMAC back",
        ),
        need(
            "DELETE",
            format!("{}/{}", vaddr_path(sn, &other), t.ip),
            format!("{list}/*/virtualAddress/*"),
            "dedicatedServer:apiovh:virtualMac/virtualAddress/delete",
            "release the IP from the other vMAC",
        ),
        need(
            "POST",
            vaddr_path(sn, &t.mac),
            format!("{list}/*/virtualAddress"),
            "dedicatedServer:apiovh:virtualMac/virtualAddress/create",
            "bind the IP to this node's vMAC",
        ),
        need(
            "GET",
            format!("/dedicated/server/{sn}/task"),
            format!("/dedicated/server/{sn}/task"),
            "dedicatedServer:apiovh:task/get",
            "find the server's pending tasks after a write whose answer was lost",
        ),
        need(
            "GET",
            format!("/dedicated/server/{sn}/task/1"),
            format!("/dedicated/server/{sn}/task/*"),
            "dedicatedServer:apiovh:task/get",
            "follow the server's tasks",
        ),
    ]
}

/// Every call of an IP move of `t`.
pub fn move_needs(t: &MoveTarget) -> Vec<Need> {
    let b = encode_block(t.block);
    vec![
        need(
            "GET",
            format!("/ip/{b}"),
            "/ip/*".into(),
            "ip:apiovh:get",
            "read where the IP is routed",
        ),
        need(
            "GET",
            format!("/ip/{b}/task"),
            "/ip/*".into(),
            "ip:apiovh:task/get",
            "find pending moves",
        ),
        need(
            "POST",
            format!("/ip/{b}/move"),
            "/ip/*/move".into(),
            "ip:apiovh:move",
            "move the IP to this node's service",
        ),
        need(
            "GET",
            format!("/ip/{b}/task/1"),
            "/ip/*".into(),
            "ip:apiovh:task/get",
            "follow the move's task",
        ),
    ]
}

/// Whether `pattern` covers `path`: `*` matches any run of characters (slashes included),
/// the rest literally, the whole path.
pub fn rule_matches(pattern: &str, path: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    let [first, middle @ .., last] = parts.as_slice() else {
        // No `*`: the whole path, literally.
        return pattern == path;
    };
    let Some(mut rest) = path.strip_prefix(first) else {
        return false;
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.ends_with(last)
}

/// Whether any rule grants `method path` (the query string is not part of the match).
pub fn granted(rules: &[Rule], method: &str, path: &str) -> bool {
    let path = path.split('?').next().unwrap_or("");
    rules
        .iter()
        .any(|r| r.method == method && rule_matches(&r.path, path))
}

/// The needs `rules` do not grant, in the order of `needs`.
pub fn missing<'a>(rules: &[Rule], needs: &'a [Need]) -> Vec<&'a Need> {
    needs
        .iter()
        .filter(|n| !granted(rules, n.method, &n.path))
        .collect()
}

/// The distinct rules of `needs` as the `accessRules` of `POST /auth/credential` (what
/// python-ovh's `request_consumerkey` and OVH's createToken page take), one per line.
pub fn access_rules_json(needs: &[&Need]) -> String {
    let mut seen: Vec<(&str, &str)> = Vec::new();
    for n in needs {
        if !seen.contains(&(n.method, n.rule.as_str())) {
            seen.push((n.method, n.rule.as_str()));
        }
    }
    let lines: Vec<String> = seen
        .iter()
        .map(|(m, p)| serde_json::json!({"method": m, "path": p}).to_string())
        .collect();
    format!("{{\"accessRules\": [\n  {}\n]}}", lines.join(",\n  "))
}

/// The distinct IAM actions of `needs`, in order.
pub fn iam_actions<'a>(needs: &[&'a Need]) -> Vec<&'a str> {
    let mut out: Vec<&str> = Vec::new();
    for n in needs {
        if !out.contains(&n.iam_action) {
            out.push(n.iam_action);
        }
    }
    out
}

/// What is known of the rights behind one failover IP.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Every call of a claim is granted by the credential's rules.
    Granted,
    /// These calls are not: each line names the rule, why it is needed and its IAM action.
    Missing(Vec<String>),
    /// The rules could not be read (OAuth2, or the read was refused): why.
    Unverified(String),
}

impl Verdict {
    /// Judges `needs` against `credential`'s rules.
    pub fn of(credential: &Credential, needs: &[Need]) -> Verdict {
        let m = missing(&credential.rules, needs);
        if m.is_empty() {
            Verdict::Granted
        } else {
            Verdict::Missing(m.iter().map(|n| n.describe()).collect())
        }
    }

    pub fn is_missing(&self) -> bool {
        matches!(self, Verdict::Missing(_))
    }
}

/// The fix for a set of missing rules, in one sentence.
pub fn fix(missing: &[String]) -> String {
    format!(
        "the OVH credential may not make every call of a claim: missing {}. Fix: add these access rules to the consumer key (or create a new one with them; `carpd check --online` prints them ready to paste), or allow the IAM actions for an OAuth2 service account",
        missing.join("; ")
    )
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use ipnet::IpNet;

    use super::*;

    #[test]
    fn the_documented_iam_actions_are_those_of_the_needs() {
        let vt = VmacTarget {
            ip: "51.68.252.230".parse().unwrap(),
            service: "ns1.example".into(),
            mac: "00:50:56:00:00:01".into(),
            virtual_machine_name: "router".into(),
            allow_last_ip_release: false,
        };
        let v = vmac_needs(&vt, None);
        assert_eq!(iam_actions(&v.iter().collect::<Vec<_>>()), IAM_ACTIONS_VMAC);
        let mt = MoveTarget {
            block: example_block("51.68.252.231".parse().unwrap()),
            service: "ns1.example".into(),
        };
        let m = move_needs(&mt);
        assert_eq!(iam_actions(&m.iter().collect::<Vec<_>>()), IAM_ACTIONS_MOVE);
    }

    fn example_block(ip: Ipv4Addr) -> IpNet {
        IpNet::from(ipnet::Ipv4Net::from(ip))
    }

    fn rules(list: &[(&str, &str)]) -> Vec<Rule> {
        list.iter()
            .map(|(m, p)| Rule {
                method: m.to_string(),
                path: p.to_string(),
            })
            .collect()
    }

    fn target() -> VmacTarget {
        VmacTarget {
            ip: "51.68.252.230".parse().unwrap(),
            service: "ns1.ip-51-68-252.eu".into(),
            mac: "02:00:00:aa:bb:cc".into(),
            virtual_machine_name: "router-002".into(),
            allow_last_ip_release: false,
        }
    }

    /// The documented minimal rules of the reference, per method.
    fn minimal(sn: &str) -> Vec<Rule> {
        rules(&[
            ("GET", &format!("/dedicated/server/{sn}/virtualMac")),
            ("GET", &format!("/dedicated/server/{sn}/virtualMac/*")),
            (
                "POST",
                &format!("/dedicated/server/{sn}/virtualMac/*/virtualAddress"),
            ),
            (
                "DELETE",
                &format!("/dedicated/server/{sn}/virtualMac/*/virtualAddress/*"),
            ),
            ("GET", &format!("/dedicated/server/{sn}/task")),
            ("GET", &format!("/dedicated/server/{sn}/task/*")),
        ])
    }

    #[test]
    fn matching_table() {
        let table: &[(&str, &str, bool)] = &[
            ("/*", "/dedicated/server/x", true),
            ("/*", "/", true),
            ("/ip", "/ip", true),
            ("/ip", "/ip/x", false),
            ("/ip*", "/ip/x", true),
            ("/ip/*", "/ip", false),
            ("/ip/*/move", "/ip/1.2.3.4%2F32/move", true),
            ("/ip/*/move", "/ip/1.2.3.4%2F32/moved", false),
            (
                "/dedicated/server/ns1/virtualMac/*/virtualAddress/*",
                "/dedicated/server/ns1/virtualMac/02:00:00:aa:bb:cc/virtualAddress/1.2.3.4",
                true,
            ),
            (
                "/dedicated/server/ns1/virtualMac/*/virtualAddress",
                "/dedicated/server/ns1/virtualMac/02:00/virtualAddress/1.2.3.4",
                false,
            ),
            (
                "/dedicated/server/ns1/virtualMac/*",
                "/dedicated/server/ns2/virtualMac/02:00",
                false,
            ),
            ("/a/*/b/*", "/a/x/b/", true),
            ("*", "", true),
            ("", "", true),
            ("", "/", false),
            ("/a**b", "/ab", true),
        ];
        for (pattern, path, want) in table {
            assert_eq!(rule_matches(pattern, path), *want, "{pattern} vs {path}");
        }
    }

    #[test]
    fn method_must_match_and_query_is_ignored() {
        let r = rules(&[("GET", "/ip/*")]);
        assert!(granted(&r, "GET", "/ip/1.2.3.4%2F32/task?status=todo"));
        assert!(!granted(&r, "POST", "/ip/1.2.3.4%2F32/move"));
        assert!(!granted(&[], "GET", "/ip"));
    }

    #[test]
    fn minimal_rules_grant_a_vmac_claim_and_each_missing_one_is_named() {
        let t = target();
        let needs = vmac_needs(&t, Some("02:00:00:dd:ee:ff"));
        let full = minimal(&t.service);
        assert!(missing(&full, &needs).is_empty());
        // Drop each rule in turn: the calls it covered are named, with their rule.
        for i in 0..full.len() {
            let mut r = full.clone();
            let dropped = r.remove(i);
            let m = missing(&r, &needs);
            assert!(!m.is_empty(), "without {dropped:?}");
            assert!(
                m.iter()
                    .all(|n| n.method == dropped.method && n.rule == dropped.path),
                "without {dropped:?}: {m:?}"
            );
        }
        // The issue's case: DELETE granted, POST not.
        let r: Vec<Rule> = full.into_iter().filter(|r| r.method != "POST").collect();
        let v = Verdict::of(
            &Credential {
                credential_id: None,
                status: None,
                expiration: None,
                rules: r,
            },
            &needs,
        );
        let Verdict::Missing(lines) = v else {
            panic!("{v:?}")
        };
        assert_eq!(lines.len(), 1);
        assert!(
            lines[0].starts_with(
                "POST /dedicated/server/ns1.ip-51-68-252.eu/virtualMac/*/virtualAddress"
            ),
            "{}",
            lines[0]
        );
        assert!(lines[0].contains("dedicatedServer:apiovh:virtualMac/virtualAddress/create"));
    }

    #[test]
    fn a_rule_naming_the_holder_covers_it_and_an_unknown_holder_is_any_other() {
        let t = target();
        let sn = &t.service;
        let mut r = minimal(sn);
        r.retain(|r| r.method != "DELETE");
        r.push(Rule {
            method: "DELETE".into(),
            path: format!("/dedicated/server/{sn}/virtualMac/02:00:00:dd:ee:ff/virtualAddress/*"),
        });
        assert!(missing(&r, &vmac_needs(&t, Some("02:00:00:DD:EE:FF"))).is_empty());
        assert_eq!(missing(&r, &vmac_needs(&t, None)).len(), 1);
        // Held by us: the DELETE would go to another vMAC, not ours.
        assert_eq!(missing(&r, &vmac_needs(&t, Some(&t.mac))).len(), 1);
    }

    #[test]
    fn move_needs_and_paste_formats() {
        let t = MoveTarget {
            block: example_block("51.68.252.230".parse().unwrap()),
            service: "ns2.eu".into(),
        };
        let needs = move_needs(&t);
        let r = rules(&[("GET", "/ip/*"), ("POST", "/ip/*/move")]);
        assert!(missing(&r, &needs).is_empty());
        let all: Vec<&Need> = needs.iter().collect();
        let json = access_rules_json(&all);
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        let got: Vec<Rule> = serde_json::from_value(v["accessRules"].clone()).unwrap();
        assert_eq!(got, r, "distinct rules, in order: {json}");
        assert_eq!(
            iam_actions(&all),
            vec!["ip:apiovh:get", "ip:apiovh:task/get", "ip:apiovh:move"]
        );
    }

    #[test]
    fn credential_decodes_with_unknown_fields() {
        let c: Credential = serde_json::from_str(
            r#"{"credentialId":7,"applicationId":3,"status":"validated","expiration":null,"allowedIPs":null,"ovhSupport":false,"rules":[{"method":"GET","path":"/*"}],"lastUse":"x"}"#,
        )
        .unwrap();
        assert_eq!(c.rules, rules(&[("GET", "/*")]));
        assert_eq!(c.status.as_deref(), Some("validated"));
    }

    /// What ends a claim at once (`OvhError::is_permanent`): refusals of the
    /// credential or its rights, never a conflict, a 404 or a transient error.
    #[test]
    fn permanent_refusals_are_classified() {
        use crate::ovh::error::{ApiError, ErrorBody, OvhError};
        let e = |status: u16, code: Option<&str>, class: Option<&str>, details: Option<&str>| {
            OvhError::Api(Box::new(ApiError {
                method: "POST".into(),
                endpoint: "ovh-eu".into(),
                path: "/dedicated/server/ns1/virtualMac/x/virtualAddress".into(),
                status,
                body: ErrorBody {
                    error_code: code.map(Into::into),
                    class: class.map(Into::into),
                    details: details.map(|d| serde_json::from_str(d).unwrap()),
                    ..ErrorBody::default()
                },
                query_id: None,
                retry_after: None,
            }))
        };
        let table = [
            (e(403, Some("NOT_GRANTED_CALL"), None, None), true),
            (e(403, Some("INVALID_CREDENTIAL"), None, None), true),
            (e(403, Some("INVALID_KEY"), None, None), true),
            (e(400, Some("INVALID_SIGNATURE"), None, None), true),
            (e(401, None, Some("Client::Unauthorized"), None), true),
            (
                e(
                    403,
                    None,
                    Some("Client::Forbidden"),
                    Some(
                        r#"{"unauthorizedActionsByIAM":["dedicatedServer:apiovh:virtualMac/virtualAddress/create"]}"#,
                    ),
                ),
                true,
            ),
            (e(403, None, Some("Client::Forbidden"), None), false),
            (e(409, None, Some("Client::Conflict"), None), false),
            (e(404, None, Some("Client::NotFound"), None), false),
            (e(400, Some("QUERY_TIME_OUT"), None, None), false),
            (e(429, None, None, None), false),
            (e(503, None, None, None), false),
        ];
        for (err, want) in table {
            assert_eq!(err.is_permanent(), want, "{err}");
        }
    }

    /// The reference semantics: classic glob matching by dynamic programming over
    /// characters (`*` any run, anything else itself), independent of the implementation.
    fn reference(pattern: &str, path: &str) -> bool {
        let p: Vec<char> = pattern.chars().collect();
        let s: Vec<char> = path.chars().collect();
        // m[i][j]: p[..i] matches s[..j].
        let mut m = vec![vec![false; s.len() + 1]; p.len() + 1];
        m[0][0] = true;
        for i in 1..=p.len() {
            for j in 0..=s.len() {
                m[i][j] = if p[i - 1] == '*' {
                    m[i - 1][j] || (j > 0 && m[i][j - 1])
                } else {
                    j > 0 && m[i - 1][j - 1] && p[i - 1] == s[j - 1]
                };
            }
        }
        m[p.len()][s.len()]
    }

    proptest::proptest! {
        #[test]
        fn matches_like_an_anchored_glob(pattern in "[/a-c:*]{0,10}", path in "[/a-c:]{0,12}") {
            proptest::prop_assert_eq!(rule_matches(&pattern, &path), reference(&pattern, &path));
        }

        #[test]
        fn every_suggested_rule_grants_its_own_call(
            sn in "[a-z0-9.-]{1,20}",
            mac in "[0-9a-f]{2}(:[0-9a-f]{2}){5}",
            holder in proptest::option::of("[0-9a-f]{2}(:[0-9a-f]{2}){5}"),
            ip in proptest::num::u32::ANY,
        ) {
            let t = VmacTarget { ip: Ipv4Addr::from(ip), service: sn, mac, virtual_machine_name: "vm".into(), allow_last_ip_release: false };
            let needs = vmac_needs(&t, holder.as_deref());
            let r: Vec<Rule> = needs.iter().map(|n| Rule { method: n.method.into(), path: n.rule.clone() }).collect();
            proptest::prop_assert!(missing(&r, &needs).is_empty());
            let b = move_needs(&MoveTarget { block: example_block(Ipv4Addr::from(ip)), service: "s".into() });
            let r: Vec<Rule> = b.iter().map(|n| Rule { method: n.method.into(), path: n.rule.clone() }).collect();
            proptest::prop_assert!(missing(&r, &b).is_empty());
        }
    }
}
