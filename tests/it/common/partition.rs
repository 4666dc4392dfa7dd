//! A TCP proxy between a node and PostgreSQL that the test can cut: from then on nothing crosses
//! it either way, and new connections are accepted and left hanging. That is a network partition
//! as the node sees it (packets vanish; nothing says the peer is gone), not a clean close.

use std::net::SocketAddr;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub struct Partition {
    pub addr: SocketAddr,
    cut: watch::Sender<bool>,
}

impl Partition {
    /// Forward connections to `target` until cut.
    pub async fn to(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (cut, cut_rx) = watch::channel(false);
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let mut cut = cut_rx.clone();
                tokio::spawn(async move {
                    if !*cut.borrow() {
                        if let Ok(server) = TcpStream::connect(target).await {
                            let (mut client, mut server) = (client, server);
                            tokio::select! {
                                _ = tokio::io::copy_bidirectional(&mut client, &mut server) => return,
                                _ = cut.wait_for(|cut| *cut) => {}
                            }
                            // Cut: hold both ends open and forward nothing.
                            let _held = (client, server);
                            std::future::pending::<()>().await;
                        }
                        return;
                    }
                    let _held = client;
                    std::future::pending::<()>().await;
                });
            }
        });
        Self { addr, cut }
    }

    pub fn cut(&self) {
        let _ = self.cut.send(true);
    }
}
