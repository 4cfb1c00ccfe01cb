//! The connection to a consumer process, the `List` and `Apply` calls the commands share,
//! and the text of its errors.

use std::collections::HashMap;

use anyhow::{Result, anyhow, bail};
use folio_protocol::LabelSelector;
use folio_protocol::consumer::shard_client::ShardClient;
use folio_protocol::consumer::{ApplyRequest, ListRequest, Status, apply_request, list_response};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

/// A Shard-service client whose calls carry the bearer token, if any.
type Client = ShardClient<InterceptedService<Channel, folio_client::Bearer>>;

use crate::journals::broker::{status_text, with_scheme};

/// A listed shard.
pub type Listed = list_response::Shard;

/// A consumer process, connected on first use.
#[derive(Debug, Clone)]
pub struct ConsumerProcess {
    client: Client,
    url: String,
}

impl ConsumerProcess {
    /// A lazy connection to `url` (a bare `host:port` means http), sending `token`.
    pub fn connect(url: &str, token: Option<&str>) -> Result<Self> {
        let url = with_scheme(url);
        let endpoint =
            Endpoint::from_shared(url.clone()).map_err(|e| anyhow!("--consumer {url:?}: {e}"))?;
        let bearer = folio_client::Bearer::new(token).map_err(|e| anyhow!("--auth-token: {e}"))?;
        Ok(Self {
            client: ShardClient::with_interceptor(endpoint.connect_lazy(), bearer),
            url,
        })
    }

    /// The gRPC client.
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// The shards matching `selector`, in id order.
    pub async fn list(&self, selector: &LabelSelector) -> Result<Vec<Listed>> {
        let request = ListRequest {
            selector: Some(selector.clone()),
            extension: Default::default(),
        };
        let response = self
            .client()
            .list(request)
            .await
            .map_err(|s| self.rpc_error("listing shards", &s))?
            .into_inner();
        check_status("listing shards", response.status)?;
        Ok(response.shards)
    }

    /// The current spec and mod revision of each of `ids` that exists, by id.
    pub async fn current(&self, ids: &[&str]) -> Result<HashMap<String, Listed>> {
        if ids.is_empty() {
            return Ok(HashMap::new());
        }
        let mut include = folio_protocol::LabelSet::default();
        for id in ids {
            include.add_value("id", *id);
        }
        let selector = LabelSelector {
            include: Some(include),
            exclude: None,
        };
        Ok(self
            .list(&selector)
            .await?
            .into_iter()
            .filter_map(|s| {
                s.spec
                    .as_ref()
                    .map(|spec| spec.id.clone())
                    .map(|id| (id, s))
            })
            .collect())
    }

    /// Applies `changes` in one transaction, all or nothing; returns the revision.
    pub async fn apply(&self, changes: Vec<apply_request::Change>) -> Result<i64> {
        let what = "applying shard specs";
        let response = self
            .client()
            .apply(ApplyRequest {
                changes,
                extension: Default::default(),
            })
            .await
            .map_err(|s| self.rpc_error(what, &s))?
            .into_inner();
        if response.status == Status::EtcdTransactionFailed as i32 {
            bail!(
                "{what}: ETCD_TRANSACTION_FAILED: a spec changed since it was read, so nothing \
                 was applied; run the command again"
            );
        }
        check_status(what, response.status)?;
        Ok(response
            .header
            .and_then(|h| h.etcd)
            .map_or(0, |e| e.revision))
    }

    /// A failed call as one line: what failed and why.
    pub fn rpc_error(&self, what: &str, status: &tonic::Status) -> anyhow::Error {
        let unreachable = format!("cannot reach the consumer process at {}", self.url);
        anyhow!("{what}: {}", status_text(&unreachable, status))
    }
}

/// `Ok` for an OK shard status; otherwise an error naming the status.
pub fn check_status(what: &str, raw: i32) -> Result<()> {
    match Status::try_from(raw) {
        Ok(Status::Ok) => Ok(()),
        Ok(Status::ShardNotFound) => {
            bail!("{what}: SHARD_NOT_FOUND (no shard has this id; see `folio shards list`)")
        }
        Ok(status) => bail!("{what}: {}", status.as_str_name()),
        Err(_) => bail!("{what}: unknown shard status {raw}"),
    }
}
