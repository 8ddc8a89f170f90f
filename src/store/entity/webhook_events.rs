use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "webhook_events")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub event_id: Option<String>,
    pub event: String,
    pub room_name: Option<String>,
    pub room_sid: Option<String>,
    pub room_id: Option<Uuid>,
    pub participant_identity: Option<String>,
    pub participant_sid: Option<String>,
    pub created_at: Option<DateTimeUtc>,
    pub received_at: DateTimeUtc,
    pub outcome: String,
    pub deliveries: i32,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
