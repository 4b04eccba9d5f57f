//! [`ControllerLink`]: how a broker reaches the controller. In the `combined` role the
//! controller is in the same process and is called directly; in the `broker` role requests go
//! over TCP to the first controller address that answers.

use std::sync::Arc;
use std::time::Duration;

use mq_client::{Connection, ConnectionConfig};
use mq_protocol::request::Request;
use mq_protocol::response::Response;
use tokio::sync::Mutex;

use super::controller::Controller;

/// How a broker reaches the controller.
#[derive(Debug)]
pub enum ControllerLink {
    /// The controller runs in this process.
    Local(Arc<Controller>),
    /// The controller is another process.
    Remote(RemoteController),
}

/// A controller reached over TCP.
#[derive(Debug)]
pub struct RemoteController {
    /// Its addresses (`--controller`), tried in order.
    addresses: Vec<String>,
    /// The connection in use; replaced when it fails.
    connection: Mutex<Option<Connection>>,
}

impl ControllerLink {
    /// A link to a controller at `addresses`.
    pub fn remote(addresses: Vec<String>) -> ControllerLink {
        ControllerLink::Remote(RemoteController {
            addresses,
            connection: Mutex::new(None),
        })
    }

    /// The controller, when it runs in this process.
    pub fn local(&self) -> Option<&Arc<Controller>> {
        match self {
            ControllerLink::Local(controller) => Some(controller),
            ControllerLink::Remote(_) => None,
        }
    }

    /// The controller's address as configured (`local` in process).
    pub fn describe(&self) -> String {
        match self {
            ControllerLink::Local(_) => "local".to_string(),
            ControllerLink::Remote(remote) => remote.addresses.join(","),
        }
    }

    /// Sends a controller request and waits up to `timeout` for its answer.
    pub async fn call(&self, request: Request, timeout: Duration) -> Result<Response, String> {
        match self {
            ControllerLink::Local(controller) => {
                let answer = tokio::time::timeout(timeout, controller.handle(request))
                    .await
                    .map_err(|_| "the controller did not answer in time".to_string())?;
                answer.ok_or_else(|| "not a controller request".to_string())
            }
            ControllerLink::Remote(remote) => remote.call(request, timeout).await,
        }
    }
}

impl RemoteController {
    async fn call(&self, request: Request, timeout: Duration) -> Result<Response, String> {
        let connection = self.connection().await?;
        match connection.request_with_timeout(request, timeout).await {
            Ok(response) => Ok(response),
            Err(error) => {
                if !connection.is_alive() {
                    let mut current = self.connection.lock().await;
                    if current
                        .as_ref()
                        .is_some_and(|held| held.address() == connection.address())
                    {
                        *current = None;
                    }
                }
                Err(format!("controller at {}: {error}", connection.address()))
            }
        }
    }

    async fn connection(&self) -> Result<Connection, String> {
        let mut current = self.connection.lock().await;
        if let Some(connection) = current.as_ref().filter(|held| held.is_alive()) {
            return Ok(connection.clone());
        }
        let mut failures = Vec::new();
        for address in &self.addresses {
            let config = ConnectionConfig {
                client_id: Some("mq-broker".to_string()),
                connect_timeout: Duration::from_secs(2),
                ..ConnectionConfig::default()
            };
            match Connection::connect(address, config).await {
                Ok(connection) => {
                    *current = Some(connection.clone());
                    return Ok(connection);
                }
                Err(error) => failures.push(error.to_string()),
            }
        }
        Err(format!(
            "no controller reachable at {}: {}",
            self.addresses.join(","),
            failures.join("; ")
        ))
    }
}
