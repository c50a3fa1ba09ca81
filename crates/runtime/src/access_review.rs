//! Asking the apiserver whether a person may do something: a
//! SubjectAccessReview for a user and their groups, as the admission
//! request's `userInfo` names them.
//!
//! tollgate never keeps its own list of who may approve a held tool call:
//! RBAC does, through a custom verb (`approve` on `mcptoolcallapprovals`,
//! the CertificateSigningRequest pattern), and this is how the controller
//! asks. A failed review is an error, never a "yes".

use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::{Api, PostParams};

/// Who asks to do something, as the apiserver authenticated them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Person {
    /// The user name.
    pub user: String,
    /// Their groups.
    pub groups: Vec<String>,
}

/// What they ask to do: a verb on one object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Access<'a> {
    /// The verb, e.g. `approve`.
    pub verb: &'a str,
    /// The API group, e.g. `tollgate.dev`.
    pub group: &'a str,
    /// The plural resource, e.g. `mcptoolcallapprovals`.
    pub resource: &'a str,
    /// The object's namespace.
    pub namespace: &'a str,
    /// The object's name.
    pub name: &'a str,
}

/// Why the apiserver could not be asked.
#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    /// The request failed (network, or the controller may not create
    /// SubjectAccessReviews: its ClusterRole needs `create` on
    /// `subjectaccessreviews.authorization.k8s.io`).
    #[error("asking the apiserver whether {user:?} may {verb} failed: {source}")]
    Request {
        /// The person.
        user: String,
        /// The verb.
        verb: String,
        /// What failed.
        #[source]
        source: kube::Error,
    },
    /// The apiserver answered without a status.
    #[error("the apiserver's SubjectAccessReview answer had no status")]
    NoStatus,
}

/// Whether `person` may do `access`, by the cluster's authorizers.
pub async fn allowed(
    client: &kube::Client,
    person: &Person,
    access: &Access<'_>,
) -> Result<bool, ReviewError> {
    let review = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(person.user.clone()),
            groups: Some(person.groups.clone()),
            resource_attributes: Some(ResourceAttributes {
                verb: Some(access.verb.to_owned()),
                group: Some(access.group.to_owned()),
                resource: Some(access.resource.to_owned()),
                namespace: Some(access.namespace.to_owned()),
                name: Some(access.name.to_owned()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let api: Api<SubjectAccessReview> = Api::all(client.clone());
    let answer = api
        .create(&PostParams::default(), &review)
        .await
        .map_err(|source| ReviewError::Request {
            user: person.user.clone(),
            verb: access.verb.to_owned(),
            source,
        })?;
    let status = answer.status.ok_or(ReviewError::NoStatus)?;
    Ok(status.allowed && !status.denied.unwrap_or(false))
}
