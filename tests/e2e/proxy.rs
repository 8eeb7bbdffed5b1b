//! The relay through a plain HTTP reverse proxy on one port (Debian's nginx, with the same
//! `location` block as `deploy/nginx.conf` minus TLS): rendezvous, tracker and the WebSocket
//! tunnel all pass through it.

use std::{
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use convey::{RelayAddr, Transport};
use convey_tests::{Side, TestRelay, transfer};

/// nginx in the foreground with its own prefix folder, killed on drop.
struct Nginx {
    child: Child,
    port: u16,
}

impl Nginx {
    fn start(upstream: std::net::SocketAddr, dir: &std::path::Path) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let conf = format!(
            "daemon off;\nmaster_process off;\nerror_log {dir}/error.log;\npid {dir}/nginx.pid;\nevents {{}}\nhttp {{\n\
             access_log off;\nclient_body_temp_path {dir}/body;\nproxy_temp_path {dir}/proxy;\n\
             map $http_upgrade $connection_upgrade {{ default upgrade; '' close; }}\n\
             server {{\n listen 127.0.0.1:{port};\n location / {{\n  proxy_pass http://{upstream};\n\
             proxy_http_version 1.1;\n  proxy_set_header Upgrade $http_upgrade;\n\
             proxy_set_header Connection $connection_upgrade;\n  proxy_set_header Host $host;\n\
             proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n\
             proxy_read_timeout 3600s;\n  proxy_send_timeout 3600s;\n  proxy_buffering off;\n }}\n}}\n}}\n",
            dir = dir.display()
        );
        let path = dir.join("nginx.conf");
        std::fs::write(&path, conf).expect("nginx.conf");
        let child = Command::new("nginx")
            .arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nginx is required (apt-get install nginx-light; .ci/run installs it)");
        let began = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                began.elapsed() < Duration::from_secs(10),
                "nginx did not start: {}",
                std::fs::read_to_string(dir.join("error.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Self { child, port }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_through_nginx_uses_only_its_one_port() {
    let relay = TestRelay::spawn_with(|c| c.trust_forwarded_for = true).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let nginx = Nginx::start(relay.server.local_addr(), dir.path());
    let via: RelayAddr = format!("http://127.0.0.1:{}", nginx.port)
        .parse()
        .expect("address");
    let (paths, _) = transfer(
        &relay,
        Side::new(&via, Transport::Relay),
        Side::new(&via, Transport::Relay),
        8 << 20,
    )
    .await;
    assert_eq!(paths, ["relay"]);
    relay.server.shutdown().await;
}
