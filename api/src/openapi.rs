//! The OpenAPI description of the API, served at `/api/openapi.json`.

use utoipa::{
    openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme},
    Modify, OpenApi,
};

use crate::routes::{audit, classes, clusters, health, inventory, jobs, scheduler, users, vms};

#[derive(OpenApi)]
#[openapi(
    info(title = "labfleet", description = "Deploys and runs classroom and lab VMs on Proxmox VE clusters."),
    paths(
        health::healthz, health::readyz, health::metrics,
        jobs::list, jobs::show, jobs::create, jobs::cancel, jobs::retry,
        clusters::list, clusters::create, clusters::update, clusters::delete, clusters::test,
        classes::create, classes::list, classes::show, classes::resize, classes::delete,
        classes::retry_failed,
        inventory::sync, inventory::templates, inventory::isos,
        users::me, users::list, users::create, users::issue_token, users::list_tokens,
        users::revoke_token, audit::list, scheduler::status, scheduler::reconcile,
        vms::list, vms::show, vms::power, vms::update,
    ),
    components(schemas(crate::error::ErrorBody)),
    modifiers(&BearerAuth),
    tags((name = "jobs", description = "Jobs and their progress"),
         (name = "clusters", description = "Proxmox clusters (admin)"),
         (name = "classes", description = "Classes: bulk deployment of student VMs"),
         (name = "inventory", description = "Nodes, storages, templates and ISOs synced from the clusters"),
         (name = "access", description = "Users and their API tokens (admin), and who am I"),
         (name = "audit", description = "The audit log (admin)"),
         (name = "vms", description = "Class VMs for their teachers and students: power, assignment"),
         (name = "operations", description = "Health and metrics")),
)]
pub(crate) struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

pub(crate) async fn serve() -> axum::Json<utoipa::openapi::OpenApi> {
    axum::Json(ApiDoc::openapi())
}
