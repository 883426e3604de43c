//! Tests of `config` (kept apart: config.rs is near its size limit).

use super::*;

#[test]
fn sizes_and_durations() {
    assert_eq!("32mb".parse::<ByteSize>().unwrap().0, 32 << 20);
    assert_eq!("1024".parse::<ByteSize>().unwrap().0, 1024);
    assert!("12xb".parse::<ByteSize>().is_err());
    assert_eq!("10m".parse::<Dur>().unwrap().0, Duration::from_secs(600));
    assert_eq!(
        "250ms".parse::<Dur>().unwrap().0,
        Duration::from_millis(250)
    );
}

#[test]
fn precedence_flag_over_file() {
    let file: Options = toml::from_str(
        "resp_addr = \"127.0.0.1:7000\"\nhttp_addr = \"127.0.0.1:7001\"\nmax_bulk_len = \"1mb\"\n",
    )
    .unwrap();
    let cli = Options::parse_from(["herald", "--resp-addr", "127.0.0.1:9000"]);
    let cfg = cli.merge_over(file).resolve().unwrap();
    assert_eq!(cfg.resp_addr.port(), 9000);
    assert_eq!(cfg.http_addr.port(), 7001);
    assert_eq!(cfg.max_bulk_len, 1 << 20);
}

#[test]
fn subscribe_rate_from_file_flag_and_default() {
    let d = Config::default().subscribe_limit;
    assert_eq!((d.rate, d.burst), (100, 1000));
    let file: Options = toml::from_str("subscribe_rate = 5\nsubscribe_burst = 50\n").unwrap();
    let cli = Options::parse_from(["herald", "--subscribe-rate", "7"]);
    let cfg = cli.merge_over(file).resolve().unwrap();
    assert_eq!(
        (cfg.subscribe_limit.rate, cfg.subscribe_limit.burst),
        (7, 50)
    );
}

#[test]
fn per_client_limits_from_file_flag_and_default() {
    let d = Config::default();
    assert_eq!(
        (d.proxy_connect_limit.rate, d.proxy_connect_limit.burst),
        (10, 100)
    );
    assert_eq!(d.max_untrusted_patterns_per_client, 100);
    assert_eq!(d.max_connections_per_client, 0);
    assert!(d.trusted_proxies.is_empty());
    let file: Options = toml::from_str(
        "proxy_connect_rate = 2\nproxy_connect_burst = 9\n\
         max_untrusted_patterns_per_client = 7\n\
         trusted_proxies = [\"10.0.0.0/8\", \"fd00::1\"]\n",
    )
    .unwrap();
    let cli = Options::parse_from(["herald", "--proxy-connect-rate", "3"]);
    let cfg = cli.merge_over(file).resolve().unwrap();
    assert_eq!(
        (cfg.proxy_connect_limit.rate, cfg.proxy_connect_limit.burst),
        (3, 9)
    );
    assert_eq!(cfg.max_untrusted_patterns_per_client, 7);
    let shown: Vec<String> = cfg.trusted_proxies.iter().map(|c| c.to_string()).collect();
    assert_eq!(shown, ["10.0.0.0/8", "fd00::1/128"]);
    let cli = Options::parse_from(["herald", "--trusted-proxies", "127.0.0.1,192.168.0.0/16"]);
    assert_eq!(cli.resolve().unwrap().trusted_proxies.len(), 2);
    for bad in ["10.0.0.0/33", "proxy.example", "10.0.0.0/"] {
        let cli = Options::parse_from(["herald", "--trusted-proxies", bad]);
        let err = cli.resolve().unwrap_err().to_string();
        assert!(err.contains("trusted_proxies"), "{bad}: {err}");
    }
}

#[test]
fn address_limits_defaults_and_sources() {
    let d = Config::default();
    let pair = |l: crate::rate::RateLimit| (l.rate, l.burst);
    assert_eq!(pair(d.auth_failure_limit), (1, 10));
    assert_eq!(pair(d.read_limit), (100, 200));
    assert_eq!(
        d.output_buffer_client_limit,
        d.output_buffer_global_limit / 4
    );
    // The session cap is on by default only where addresses are the
    // clients' own: with trusted proxies.
    let cli = Options::parse_from(["herald", "--trusted-proxies", "10.0.0.0/8"]);
    assert_eq!(cli.resolve().unwrap().max_connections_per_client, 1000);
    let cli = Options::parse_from([
        "herald",
        "--trusted-proxies",
        "10.0.0.0/8",
        "--max-connections-per-client",
        "0",
    ]);
    assert_eq!(cli.resolve().unwrap().max_connections_per_client, 0);
    let file: Options = toml::from_str(
        "auth_failure_rate = 2\nauth_failure_burst = 3\nread_rate = 4\n\
         read_burst = 5\noutput_buffer_global_limit = \"256mb\"\n",
    )
    .unwrap();
    let cli = Options::parse_from(["herald", "--read-burst", "6"]);
    let cfg = cli.merge_over(file).resolve().unwrap();
    assert_eq!(pair(cfg.auth_failure_limit), (2, 3));
    assert_eq!(pair(cfg.read_limit), (4, 6));
    assert_eq!(cfg.output_buffer_client_limit, 64 << 20);
    let cli = Options::parse_from(["herald", "--output-buffer-client-limit", "1mb"]);
    assert_eq!(cli.resolve().unwrap().output_buffer_client_limit, 1 << 20);
    // At least one connection's hard limit, at most the global limit.
    let share = |args: &[&str]| {
        let mut v = vec!["herald"];
        v.extend_from_slice(args);
        Options::parse_from(v)
            .resolve()
            .unwrap()
            .output_buffer_client_limit
    };
    assert_eq!(share(&["--output-buffer-global-limit", "40mb"]), 32 << 20);
    assert_eq!(share(&["--output-buffer-global-limit", "16mb"]), 16 << 20);
    assert_eq!(share(&["--output-buffer-global-limit", "0"]), 0);
}

#[test]
fn unknown_keys_are_named() {
    let err = toml::from_str::<Options>("resp_adr = \"x\"").unwrap_err();
    assert!(err.to_string().contains("resp_adr"), "{err}");
    let err = toml::from_str::<Options>("[namespaces.chat]\nhistory_sise = 3\n").unwrap_err();
    assert!(err.to_string().contains("history_sise"), "{err}");
}

#[test]
fn namespaces_select_by_prefix() {
    let file: Options = toml::from_str(
        "[namespaces.chat]\nhistory_size = 100\nhistory_ttl = \"10m\"\npresence = true\n",
    )
    .unwrap();
    let cfg = file.resolve().unwrap();
    assert_eq!(cfg.namespace(b"chat:room1").history_size, 100);
    assert_eq!(
        cfg.namespace(b"chat:room1").history_ttl.0,
        Duration::from_secs(600)
    );
    assert_eq!(cfg.namespace(b"news").history_size, 0);
}

#[test]
fn anonymous_access_defaults_to_closed_once_auth_is_configured() {
    let toml = "[namespaces.chat]\npresence = true\n[namespaces.pub]\nallow_anonymous = true\n";
    let open = toml::from_str::<Options>(toml).unwrap().resolve().unwrap();
    assert!(open.namespace(b"chat:x").allow_anonymous);
    assert!(open.namespace(b"news:today").allow_anonymous);
    let mut with_jwt = toml::from_str::<Options>(toml).unwrap();
    with_jwt.jwt_hmac_secret = Some("s".into());
    let cfg = with_jwt.resolve().unwrap();
    assert!(!cfg.namespace(b"chat:x").allow_anonymous);
    assert!(!cfg.namespace(b"news:today").allow_anonymous);
    assert!(!cfg.namespace(b"nocolon").allow_anonymous);
    assert!(
        cfg.namespace(b"pub:x").allow_anonymous,
        "explicit true stays"
    );
    let pass = Options {
        requirepass: Some("p".into()),
        ..Default::default()
    };
    assert!(!pass.resolve().unwrap().namespace(b"x").allow_anonymous);
}
