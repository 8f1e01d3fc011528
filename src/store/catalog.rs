//! Model deployments and the named credentials they may refer to. Provider
//! secrets (`api_key`, credential values) are sealed; the rest is kept as
//! the JSON objects the API speaks, validated by the caller.

use super::crypto::{self, new_id};
use super::model::{Credential, Deployment, now_ms};
use super::{Store, StoreError};

/// A deployment to create or the new state of one: JSON objects as text.
#[derive(Debug, Default)]
pub struct DeploymentChanges {
    pub model_name: Option<String>,
    /// `litellm_params` without its secrets.
    pub params: Option<String>,
    /// The secret params as a JSON object; `Some(None)` removes them.
    pub secrets: Option<Option<String>>,
    /// `model_info` without `id` and timestamps.
    pub model_info: Option<String>,
}

/// A credential to create.
#[derive(Debug)]
pub struct CredentialChanges {
    pub name: String,
    pub info: String,
    /// `credential_values` as JSON text.
    pub values: String,
}

impl Store {
    /// Deployments, oldest first.
    pub fn list_deployments(&self) -> Result<Vec<Deployment>, StoreError> {
        let txn = self.env.read_txn()?;
        let mut all = self
            .deployments
            .iter(&txn)?
            .map(|entry| entry.map(|(_, d)| d))
            .collect::<Result<Vec<_>, _>>()?;
        all.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(all)
    }

    /// Whether any model is registered.
    pub fn has_deployments(&self) -> Result<bool, StoreError> {
        let txn = self.env.read_txn()?;
        Ok(!self.deployments.is_empty(&txn)?)
    }

    pub fn get_deployment(&self, id: &str) -> Result<Deployment, StoreError> {
        let txn = self.env.read_txn()?;
        self.deployments
            .get(&txn, id)?
            .ok_or(StoreError::NotFound("model"))
    }

    /// Creates a deployment; `id` `None` means a new UUID.
    pub fn create_deployment(
        &self,
        id: Option<String>,
        new: DeploymentChanges,
    ) -> Result<Deployment, StoreError> {
        let id = match id {
            Some(id) if !id.trim().is_empty() => id.trim().to_string(),
            _ => new_id()?.to_string(),
        };
        let model_name = new
            .model_name
            .ok_or_else(|| StoreError::Invalid("model_name is required".into()))?;
        let now = now_ms();
        let deployment = Deployment {
            id,
            model_name,
            params: new.params.unwrap_or_else(|| "{}".into()),
            secrets: self.seal_optional(new.secrets.flatten())?,
            model_info: new.model_info.unwrap_or_else(|| "{}".into()),
            from_config: false,
            created_at: now,
            updated_at: now,
        };
        let mut txn = self.admin_txn()?;
        if self.deployments.get(&txn, &deployment.id)?.is_some() {
            return Err(StoreError::Taken("model id", deployment.id));
        }
        self.deployments
            .put(&mut txn, &deployment.id, &deployment)?;
        self.commit_admin(txn)?;
        Ok(deployment)
    }

    /// Replaces the deployments of the config file with `models` (id and
    /// content each), in one transaction; those made through the API stay.
    pub fn replace_config_deployments(
        &self,
        models: Vec<(String, DeploymentChanges)>,
    ) -> Result<(), StoreError> {
        let now = now_ms();
        let mut txn = self.admin_txn()?;
        let mut stale = Vec::new();
        for entry in self.deployments.iter(&txn)? {
            let (id, deployment) = entry?;
            if deployment.from_config {
                stale.push(id.to_string());
            }
        }
        for id in stale {
            self.deployments.delete(&mut txn, &id)?;
        }
        for (id, model) in models {
            if self
                .deployments
                .get(&txn, &id)?
                .is_some_and(|d| !d.from_config)
            {
                return Err(StoreError::Taken("model id", id));
            }
            let deployment = Deployment {
                id,
                model_name: model.model_name.unwrap_or_default(),
                params: model.params.unwrap_or_else(|| "{}".into()),
                secrets: self.seal_optional(model.secrets.flatten())?,
                model_info: model.model_info.unwrap_or_else(|| "{}".into()),
                from_config: true,
                created_at: now,
                updated_at: now,
            };
            self.deployments
                .put(&mut txn, &deployment.id, &deployment)?;
        }
        self.commit_admin(txn)?;
        Ok(())
    }

    pub fn update_deployment(
        &self,
        id: &str,
        changes: DeploymentChanges,
    ) -> Result<Deployment, StoreError> {
        let mut txn = self.admin_txn()?;
        let mut deployment = self
            .deployments
            .get(&txn, id)?
            .ok_or(StoreError::NotFound("model"))?;
        if let Some(name) = changes.model_name {
            deployment.model_name = name;
        }
        if let Some(params) = changes.params {
            deployment.params = params;
        }
        if let Some(secrets) = changes.secrets {
            deployment.secrets = self.seal_optional(secrets)?;
        }
        if let Some(info) = changes.model_info {
            deployment.model_info = info;
        }
        deployment.updated_at = now_ms();
        self.deployments.put(&mut txn, id, &deployment)?;
        self.commit_admin(txn)?;
        Ok(deployment)
    }

    pub fn delete_deployment(&self, id: &str) -> Result<(), StoreError> {
        let mut txn = self.admin_txn()?;
        if !self.deployments.delete(&mut txn, id)? {
            return Err(StoreError::NotFound("model"));
        }
        self.commit_admin(txn)?;
        Ok(())
    }

    /// The deployment's secret params (a JSON object as text), decrypted.
    pub fn deployment_secrets(
        &self,
        deployment: &Deployment,
    ) -> Result<Option<String>, StoreError> {
        deployment
            .secrets
            .as_ref()
            .map(|sealed| crypto::unseal(self.cipher.as_ref(), sealed))
            .transpose()
    }

    /// Credentials, by name.
    pub fn list_credentials(&self) -> Result<Vec<Credential>, StoreError> {
        let txn = self.env.read_txn()?;
        self.credentials
            .iter(&txn)?
            .map(|entry| entry.map(|(_, c)| c).map_err(StoreError::from))
            .collect()
    }

    pub fn get_credential(&self, name: &str) -> Result<Credential, StoreError> {
        let txn = self.env.read_txn()?;
        self.credentials
            .get(&txn, name)?
            .ok_or(StoreError::NotFound("credential"))
    }

    pub fn create_credential(&self, new: CredentialChanges) -> Result<Credential, StoreError> {
        let name = new.name.trim().to_string();
        if name.is_empty() || name.len() > 200 {
            return Err(StoreError::Invalid(
                "credential_name must be 1 to 200 characters".into(),
            ));
        }
        let now = now_ms();
        let credential = Credential {
            name,
            info: new.info,
            values: crypto::seal(self.cipher.as_ref(), &new.values)?,
            created_at: now,
            updated_at: now,
        };
        let mut txn = self.admin_txn()?;
        if self.credentials.get(&txn, &credential.name)?.is_some() {
            return Err(StoreError::Taken("credential_name", credential.name));
        }
        self.credentials
            .put(&mut txn, &credential.name, &credential)?;
        self.commit_admin(txn)?;
        Ok(credential)
    }

    /// Deletes a credential no deployment refers to.
    pub fn delete_credential(&self, name: &str) -> Result<(), StoreError> {
        let mut txn = self.admin_txn()?;
        if self.credentials.get(&txn, name)?.is_none() {
            return Err(StoreError::NotFound("credential"));
        }
        let needle = serde_json::Value::String(name.to_string());
        let mut users = Vec::new();
        for entry in self.deployments.iter(&txn)? {
            let (_, deployment) = entry?;
            let params: serde_json::Value =
                serde_json::from_str(&deployment.params).unwrap_or_default();
            if params.get("litellm_credential_name") == Some(&needle) {
                users.push(deployment.id);
            }
        }
        if !users.is_empty() {
            return Err(StoreError::Invalid(format!(
                "credential {name:?} is used by model(s) {}; update or delete them first",
                users.join(", ")
            )));
        }
        self.credentials.delete(&mut txn, name)?;
        self.commit_admin(txn)?;
        Ok(())
    }

    /// The credential's values (a JSON object as text), decrypted.
    pub fn credential_values(&self, credential: &Credential) -> Result<String, StoreError> {
        crypto::unseal(self.cipher.as_ref(), &credential.values)
    }

    fn seal_optional(&self, secret: Option<String>) -> Result<Option<crypto::Sealed>, StoreError> {
        secret
            .map(|s| crypto::seal(self.cipher.as_ref(), &s))
            .transpose()
    }
}
