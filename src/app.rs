//! The application's shared state: what every REST handler, MCP tool and service function can
//! reach. Built once by [`crate::server::start`].

use crate::auth::Authenticator;
use crate::config::Config;
use crate::store::EventStore;
use domain::plan::PlanCatalog;
use sqlx::PgPool;
use std::sync::Arc;

/// What every handler can reach. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub plans: Arc<PlanCatalog>,
    pub pool: PgPool,
    pub store: EventStore,
    pub auth: Arc<Authenticator>,
    pub dispatcher: crate::dispatch::Dispatcher,
    pub engine: Arc<dyn crate::engine::SessionEngine>,
    pub master_key: Arc<crate::secrets::MasterKey>,
    pub deliverer: crate::webhook_delivery::Deliverer,
    /// Where sends are decided and recorded (group commit, unless configured off).
    pub sends: crate::commands::group_commit::SendBatcher,
    /// The streaming replica the read endpoints use, if one is configured.
    pub reads: Option<Arc<crate::read_replica::ReadReplica>>,
}

impl AppState {
    /// The pool a read endpoint (lists of lines, chats, messages, deliveries; usage) reads from:
    /// the replica once it has caught up with every write made before this call, else the
    /// primary. Without a replica, the primary.
    pub async fn read_pool(&self) -> PgPool {
        match &self.reads {
            Some(reads) => reads.pool_for_read(&self.pool).await,
            None => self.pool.clone(),
        }
    }
}
