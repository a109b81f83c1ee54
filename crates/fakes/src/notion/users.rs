//! Users (`GET /v1/users/me`): the bot user of the integration, with its workspace, which is
//! what playlistd's `check` asks first to tell a bad token from a missing share.

use super::FakeState;
use super::reply::Reply;
use super::wire::request_id;
use serde_json::json;

impl FakeState {
    pub(super) fn users_me(&self) -> Reply {
        Reply::ok(json!({
            "object": "user",
            "id": self.bot_id,
            "name": self.bot_name,
            "avatar_url": null,
            "type": "bot",
            "bot": {
                "owner": {"type": "workspace", "workspace": true},
                "workspace_name": self.workspace_name,
                "workspace_id": self.workspace_id,
                "workspace_limits": {"max_file_upload_size_in_bytes": 5_242_880},
            },
            "request_id": request_id(),
        }))
    }
}
