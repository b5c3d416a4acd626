//! The test server starts, answers, keeps AOF data across a restart and leaves no process.

use beckon_testkit::{Fsync, Options, RedisCluster, RedisServer};

#[test]
fn starts_answers_and_is_gone_after_drop() {
    let server = RedisServer::start().expect("start");
    let mut con = server.connection().expect("connect");
    let pong: String = redis::cmd("PING").query(&mut con).expect("ping");
    assert_eq!(pong, "PONG");
    if server.is_external() {
        return;
    }
    let port = server.port();
    drop(con);
    drop(server);
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "server still up"
    );
}

#[test]
fn aof_data_survives_a_kill_and_restart() {
    let mut server = RedisServer::start_with(Options::aof(Fsync::Always)).expect("start");
    if server.is_external() {
        return;
    }
    let mut con = server.connection().expect("connect");
    let _: () = redis::cmd("SET")
        .arg("k")
        .arg("v")
        .query(&mut con)
        .expect("set");
    server.restart().expect("restart");
    let mut con = server.connection().expect("connect again");
    let v: Option<String> = redis::cmd("GET").arg("k").query(&mut con).expect("get");
    assert_eq!(v.as_deref(), Some("v"));
}

#[test]
fn cluster_of_three_masters_is_ok_and_stops() {
    let cluster = RedisCluster::start(3).expect("cluster");
    assert_eq!(cluster.urls().len(), 3);
    let ports: Vec<u16> = cluster.nodes().iter().map(|n| n.port()).collect();
    let mut con = cluster.nodes()[0].connection().expect("connect");
    let info: String = redis::cmd("CLUSTER")
        .arg("INFO")
        .query(&mut con)
        .expect("info");
    assert!(info.contains("cluster_known_nodes:3"), "{info}");
    drop(con);
    drop(cluster);
    for port in ports {
        assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
    }
}
