//! INFO: Redis's sections (server, clients, stats, ...) with Herald's figures.

use std::fmt::Write;

use bytes::Bytes;

use super::Command;
use crate::hub::Stats;
use crate::resp::connection::Conn;

pub const INFO: Command = Command::new(
    "info",
    -1,
    "server",
    "Returns information and statistics about the server.",
    info,
)
.flags(&["loading", "stale"])
.acl(&["@slow", "@dangerous"]);

const SECTIONS: &[&str] = &[
    "server",
    "clients",
    "memory",
    "stats",
    "replication",
    "cpu",
    "keyspace",
    "herald",
];

fn info(conn: &mut Conn, args: &[Bytes]) {
    let wanted: Vec<String> = args[1..]
        .iter()
        .map(|a| String::from_utf8_lossy(a).to_ascii_lowercase())
        .collect();
    let all = wanted.is_empty()
        || wanted
            .iter()
            .any(|w| w == "all" || w == "everything" || w == "default");
    let server = &conn.server;
    let hub = &server.hub;
    let mut text = String::new();
    for section in SECTIONS {
        if !all && !wanted.iter().any(|w| w == section) {
            continue;
        }
        if !text.is_empty() {
            text.push_str("\r\n");
        }
        let mut s = String::new();
        match *section {
            "server" => {
                let up = hub.uptime().as_secs();
                let _ = write!(
                    s,
                    "redis_version:{}\r\nherald_version:{}\r\nredis_mode:standalone\r\nos:{}\r\narch_bits:64\r\nmultiplexing_api:epoll\r\nprocess_id:{}\r\ntcp_port:{}\r\nuptime_in_seconds:{}\r\nuptime_in_days:{}\r\nexecutable:herald\r\n",
                    crate::REDIS_VERSION,
                    env!("CARGO_PKG_VERSION"),
                    std::env::consts::OS,
                    std::process::id(),
                    server.local_addr.port(),
                    up,
                    up / 86400
                );
            }
            "clients" => {
                let pubsub = server
                    .clients
                    .iter()
                    .filter(|h| {
                        let m = h.meta();
                        m.sub + m.psub + m.ssub > 0
                    })
                    .count();
                let _ = write!(
                    s,
                    "connected_clients:{}\r\nmaxclients:{}\r\npubsub_clients:{}\r\nblocked_clients:0\r\n",
                    server.clients.len(),
                    server.cfg.max_connections,
                    pubsub
                );
            }
            "memory" => {
                let rss = crate::rss_bytes().unwrap_or(0);
                let _ = write!(
                    s,
                    "used_memory:{rss}\r\nused_memory_rss:{rss}\r\nmaxmemory:0\r\n"
                );
            }
            "stats" => {
                let st = hub.stats();
                let _ = write!(
                    s,
                    "total_connections_received:{}\r\ntotal_commands_processed:{}\r\nrejected_connections:{}\r\npubsub_channels:{}\r\npubsub_patterns:{}\r\npubsubshard_channels:{}\r\nclient_output_buffer_limit_disconnections:{}\r\nauth_failures:{}\r\nmessages_published:{}\r\nmessages_delivered:{}\r\n",
                    Stats::get(&st.connections_total),
                    Stats::get(&st.commands),
                    Stats::get(&st.rejected_connections),
                    hub.channels(crate::hub::Space::Global, None).len(),
                    hub.numpat(),
                    hub.channels(crate::hub::Space::Shard, None).len(),
                    Stats::get(&st.slow_disconnects),
                    Stats::get(&st.auth_failures),
                    Stats::get(&st.published),
                    Stats::get(&st.delivered),
                );
            }
            "replication" => s.push_str("role:master\r\nconnected_slaves:0\r\n"),
            "cpu" => {}
            "keyspace" => {}
            "herald" => {
                let _ = write!(
                    s,
                    "output_buffer_hard_limit:{}\r\noutput_buffer_soft_limit:{}\r\noutput_buffer_soft_seconds:{}\r\n",
                    server.cfg.output_limits.hard_bytes,
                    server.cfg.output_limits.soft_bytes,
                    server.cfg.output_limits.soft_duration.as_secs()
                );
            }
            _ => {}
        }
        let mut title = section.to_string();
        title[..1].make_ascii_uppercase();
        let _ = write!(text, "# {title}\r\n{s}");
    }
    conn.reply().verbatim(text.as_bytes());
}
