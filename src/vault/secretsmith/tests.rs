//! Table tests for the secretsmith loader, the PyYAML boolean rules as the loader applies them,
//! and a property test that no input makes it panic or echo a secret.

use std::path::Path;

use proptest::prelude::*;
use secrecy::ExposeSecret;

use super::*;

fn no_env(_: &str) -> Option<String> {
    None
}

fn opts<'a>(env: &'a dyn Fn(&str) -> Option<String>) -> LoadOptions<'a> {
    LoadOptions {
        approle_mount: "approle",
        policy: SecretPolicy::default(),
        env,
    }
}

fn no_file(p: &Path) -> Result<SecretString, String> {
    Err(format!("token file {} cannot be read here", p.display()))
}

fn parse_ok(text: &str) -> Settings {
    parse(text, Path::new("/s.yaml"), &opts(&no_env), &no_file)
        .unwrap_or_else(|e| panic!("{text}\n=> {e}"))
}

fn parse_err(text: &str) -> String {
    match parse(text, Path::new("/s.yaml"), &opts(&no_env), &no_file) {
        Ok(s) => panic!("{text}\n=> accepted: {s:?}"),
        Err(e) => e.to_string(),
    }
}

const APPROLE: &str = "\
vault:
  server:
    url: https://172.27.27.7:8200
    verify: /usr/local/share/certs/nasqueron-vault-ca.crt
  auth:
    method: approle
    role_id: ROLE-ID-VALUE
    secret_id: SECRET-ID-VALUE
";

#[test]
fn the_deployment_file_loads() {
    let s = parse_ok(APPROLE);
    assert_eq!(s.server.url, "https://172.27.27.7:8200");
    assert_eq!(
        s.server.verify,
        Verify::CaFile("/usr/local/share/certs/nasqueron-vault-ca.crt".into())
    );
    assert_eq!(s.server.namespace, None);
    match &s.auth {
        Auth::AppRole {
            mount,
            role_id,
            secret_id,
        } => {
            assert_eq!(mount, "approle");
            assert_eq!(role_id.expose_secret(), "ROLE-ID-VALUE");
            assert_eq!(
                secret_id.as_ref().unwrap().expose_secret(),
                "SECRET-ID-VALUE"
            );
        }
        other => panic!("{other:?}"),
    }
    let dbg = format!("{s:?}");
    assert!(
        !dbg.contains("ROLE-ID-VALUE") && !dbg.contains("SECRET-ID-VALUE"),
        "{dbg}"
    );
    assert!(dbg.contains("approle (mount approle)"), "{dbg}");
}

#[test]
fn approle_mount_comes_from_the_options() {
    let o = LoadOptions {
        approle_mount: "/routers/",
        ..opts(&no_env)
    };
    let s = parse(APPROLE, Path::new("/s.yaml"), &o, &no_file).unwrap();
    assert!(matches!(&s.auth, Auth::AppRole { mount, .. } if mount == "routers"));
}

#[test]
fn token_method_is_the_default_and_accepts_both_file_spellings() {
    let s =
        parse_ok("vault:\n  server: {url: 'http://127.0.0.1:8200/'}\n  auth: {token: TOKVAL}\n");
    assert_eq!(s.server.url, "http://127.0.0.1:8200");
    assert!(
        matches!(&s.auth, Auth::Token { token, file: None } if token.expose_secret() == "TOKVAL")
    );
    for key in ["tokenfile", "token_file"] {
        let text = format!(
            "vault:\n  server: {{url: 'https://v:8200'}}\n  auth: {{method: token, {key}: /etc/tok}}\n"
        );
        let read = |p: &Path| {
            assert_eq!(p, Path::new("/etc/tok"));
            Ok(SecretString::from("FROMFILE"))
        };
        let s = parse(&text, Path::new("/s.yaml"), &opts(&no_env), &read).unwrap();
        assert!(
            matches!(&s.auth, Auth::Token { token, file: Some(_) } if token.expose_secret() == "FROMFILE"),
            "{key}"
        );
        assert_eq!(s.auth.describe(), "token (from /etc/tok)");
    }
}

#[test]
fn verify_follows_pyyaml() {
    let with = |v: &str| {
        format!("vault:\n  server:\n    url: https://v\n    verify: {v}\n  auth: {{token: t}}\n")
    };
    for t in [
        "yes", "Yes", "YES", "true", "True", "TRUE", "on", "On", "ON",
    ] {
        assert_eq!(parse_ok(&with(t)).server.verify, Verify::System, "{t}");
    }
    for f in [
        "no", "No", "NO", "false", "False", "FALSE", "off", "Off", "OFF",
    ] {
        assert_eq!(parse_ok(&with(f)).server.verify, Verify::Insecure, "{f}");
    }
    for a in ["y", "n", "Y", "N", "yEs", "oFF"] {
        let e = parse_err(&with(a));
        assert!(
            e.contains("/s.yaml:4:13: vault.server.verify:") && e.contains("PyYAML"),
            "{a}: {e}"
        );
    }
    let e = parse_err(&with("certs/ca.pem"));
    assert!(e.contains("absolute path"), "{e}");
    // No verify: the system store, or VAULT_CACERT.
    let text = "vault:\n  server: {url: 'https://v'}\n  auth: {token: t}\n";
    assert_eq!(parse_ok(text).server.verify, Verify::System);
    let env = |k: &str| (k == "VAULT_CACERT").then(|| "/ca.pem".to_string());
    let s = parse(text, Path::new("/s.yaml"), &opts(&env), &no_file).unwrap();
    assert_eq!(s.server.verify, Verify::CaFile("/ca.pem".into()));
}

#[test]
fn namespace_from_the_file_or_the_environment() {
    let env = |k: &str| (k == "VAULT_NAMESPACE").then(|| "envns".to_string());
    let text = "vault:\n  server: {url: 'https://v'}\n  auth: {token: t}\n";
    let s = parse(text, Path::new("/s.yaml"), &opts(&env), &no_file).unwrap();
    assert_eq!(s.server.namespace.as_deref(), Some("envns"));
    let text = "vault:\n  server: {url: 'https://v', namespace: ops}\n  auth: {token: t}\n";
    let s = parse(text, Path::new("/s.yaml"), &opts(&env), &no_file).unwrap();
    assert_eq!(s.server.namespace.as_deref(), Some("ops"));
}

#[test]
fn problems_name_the_file_the_key_and_the_fix() {
    let cases: &[(&str, &str)] = &[
        ("other: 1\n", "/s.yaml: vault: is missing"),
        (
            "vault:\n  auth: {token: t}\n",
            "vault.server.url: is missing",
        ),
        (
            "vault:\n  server: {url: 'ftp://v'}\n  auth: {token: t}\n",
            "/s.yaml:2:17: vault.server.url: 'ftp://v' must be an http:// or https:// URL",
        ),
        (
            "vault:\n  server: {url: 'https://v'}\n  auth: {method: approle, secret_id: SECRETX}\n",
            "vault.auth.role_id: is missing",
        ),
        (
            "vault:\n  server: {url: 'https://v'}\n  auth: {method: ldap}\n",
            "vault.auth.method: 'ldap' is not supported: use token (the default) or approle",
        ),
        (
            "vault:\n  server: {url: 'https://v'}\n  auth: {method: token}\n",
            "vault.auth: has no credentials",
        ),
        (
            "vault:\n  server: {url: 'https://v'}\n  auth: {token: SECRETX, tokenfile: /t}\n",
            "vault.auth.token: and vault.auth.tokenfile are both set",
        ),
        (
            "vault:\n  server: {url: 'https://v'}\n  auth: {tokenfile: rel/t}\n",
            "vault.auth.tokenfile: 'rel/t' must be an absolute path",
        ),
        (
            "vault:\n  server: {url: 'https://user:SECRETX@v'}\n  auth: {token: t}\n",
            "must not hold credentials",
        ),
        ("vault: [a\n", "/s.yaml:"),
    ];
    for (text, want) in cases {
        let e = parse_err(text);
        assert!(e.contains(want), "{text}\nwant: {want}\ngot:  {e}");
        assert!(!e.contains("SECRETX"), "a secret leaked: {e}");
    }
}

#[test]
fn type_errors_do_not_echo_values() {
    // A mapping where a string is expected: the parser's message must not quote the file.
    let e = parse_err(
        "vault:\n  server: {url: 'https://v'}\n  auth:\n    role_id: {SECRETX: 1}\n    method: approle\n",
    );
    assert!(!e.contains("SECRETX"), "{e}");
    assert!(e.starts_with("/s.yaml:4:"), "{e}");
}

/// The cut itself, on messages of the shape parsers give ("invalid type: string \"...\"").
/// serde_saphyr's messages quote no value for any input tried (a scalar for a mapping, a
/// list or a mapping for a string, duplicate keys, unterminated quotes, anchors), so the
/// test above and the proptest below pass without the cut: it is defence in depth, and
/// this is the test that fails without it.
#[test]
fn quoted_text_in_a_parser_message_is_cut() {
    let m = yaml_message(
        "error: line 3 column 16: invalid type: string \"SECRETY\", expected a map\n  3 | x",
    );
    assert_eq!(
        m,
        "not a valid secretsmith file: invalid type: string \"…\", expected a map"
    );
    for q in ['`', '\'', '"'] {
        let m = yaml_message(&format!("unknown field {q}SECRETZ{q}, expected url"));
        assert!(!m.contains("SECRETZ"), "{m}");
    }
    // An unterminated quote cuts to the end.
    let m = yaml_message("unknown variant `SECRETW");
    assert!(!m.contains("SECRETW"), "{m}");
}

#[test]
fn environment_fallback() {
    let env = |k: &str| match k {
        "VAULT_ADDR" => Some("https://vault.example:8200".to_string()),
        "VAULT_TOKEN" => Some("ENVTOKEN".to_string()),
        "VAULT_CACERT" => Some("/etc/ca.pem".to_string()),
        _ => None,
    };
    let s = load(None, &opts(&env)).unwrap();
    assert_eq!(s.origin, Origin::Environment);
    assert_eq!(s.server.url, "https://vault.example:8200");
    assert_eq!(s.server.verify, Verify::CaFile("/etc/ca.pem".into()));
    assert!(matches!(&s.auth, Auth::Token { token, .. } if token.expose_secret() == "ENVTOKEN"));
    let e = load(None, &opts(&no_env)).unwrap_err().to_string();
    assert!(
        e.contains("VAULT_ADDR") && e.contains("vault.secretsmith"),
        "{e}"
    );
    // A file without a url falls back to VAULT_ADDR, as hvac does.
    let s = parse(
        "vault:\n  auth: {token: t}\n",
        Path::new("/s.yaml"),
        &opts(&env),
        &no_file,
    )
    .unwrap();
    assert_eq!(s.server.url, "https://vault.example:8200");
}

#[test]
fn open_files_are_refused_unless_overridden() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("s.yaml");
    std::fs::write(&f, APPROLE).unwrap();
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
    let e = load(Some(&f), &opts(&no_env)).unwrap_err().to_string();
    assert!(e.contains("chmod 0400") || e.contains("chown root"), "{e}");
    assert!(!e.contains("SECRET-ID-VALUE"), "{e}");
    let lax = LoadOptions {
        policy: SecretPolicy {
            allow_insecure_files: true,
        },
        ..opts(&no_env)
    };
    assert!(load(Some(&f), &lax).is_ok());
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o400)).unwrap();
    // Root-owned 0400 passes when the tests run as root; otherwise ownership is the complaint.
    match load(Some(&f), &opts(&no_env)) {
        Ok(_) => {}
        Err(e) => assert!(e.to_string().contains("chown root"), "{e}"),
    }
}

#[test]
fn same_credentials_tells_a_rotation() {
    let a = parse_ok(APPROLE).auth;
    let b = parse_ok(&APPROLE.replace("SECRET-ID-VALUE", "NEW")).auth;
    assert!(a.same_credentials(&a.clone()));
    assert!(!a.same_credentials(&b));
}

proptest! {
    #[test]
    fn never_panics_and_never_echoes_a_secret(text in "\\PC{0,200}", secret in "[A-Z]{12}") {
        let with_secret = format!("vault:\n  auth:\n    secret_id: {secret}\n{text}");
        for t in [&text, &with_secret] {
            if let Err(e) = parse(t, Path::new("/s.yaml"), &opts(&no_env), &no_file) {
                prop_assert!(!e.to_string().contains(&secret), "{}", e);
            }
        }
    }

    #[test]
    fn structured_inputs_never_panic(
        url in prop::option::of("[a-z:/.0-9]{0,20}"),
        verify in prop::option::of("[a-zA-Z/]{0,8}"),
        method in prop::option::of("[a-z]{0,8}"),
        keys in prop::collection::vec(("(token|tokenfile|token_file|role_id|secret_id)", "[ -~]{0,10}"), 0..4),
    ) {
        let mut t = String::from("vault:\n  server:\n");
        if let Some(u) = url { t += &format!("    url: \"{u}\"\n"); }
        if let Some(v) = verify { t += &format!("    verify: {v}\n"); }
        t += "  auth:\n";
        if let Some(m) = method { t += &format!("    method: {m}\n"); }
        for (k, v) in keys { t += &format!("    {k}: {v:?}\n"); }
        let _ = parse(&t, Path::new("/s.yaml"), &opts(&no_env), &no_file);
    }
}
