//! The catalog's admin resources (providers, traits, segments) and the edits the admin API
//! makes to a catalog, free of actix so they can be unit-tested. Every edit produces the
//! [`CatalogChange`] the store applies; whether the resulting catalog is valid (rules parse,
//! references resolve) is checked when it is compiled, before anything is stored.

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use super::error::AdminError;
use crate::core::catalog::{Catalog, Destination, Provider, Segment, Trait};
use crate::core::rules::segment_rule::SegmentRule;
use crate::store::{CatalogChange, CatalogKind, CatalogObject};

/// A kind of catalog object managed under `/v1/<NAME>`.
pub trait Resource: Serialize + DeserializeOwned + Clone + Send + Sync + 'static {
    /// Path segment and plural name: `traits`.
    const NAME: &'static str;
    /// Singular, for messages: `trait`.
    const SINGULAR: &'static str;
    /// The id field (AAM's name): `sid`, `pid`.
    const ID_FIELD: &'static str;
    /// Largest id (ids are assigned from 1 up).
    const MAX_ID: u64;
    const KIND: CatalogKind;
    /// Whether objects have an `integrationCode` (and `/ic:{code}` lookups).
    const HAS_INTEGRATION_CODE: bool = true;

    fn id(&self) -> u64;
    fn integration_code(&self) -> Option<&str>;
    fn all(catalog: &Catalog) -> &Vec<Self>;
    fn all_mut(catalog: &mut Catalog) -> &mut Vec<Self>;
    fn into_object(self) -> CatalogObject;
    /// Why object `id` cannot be deleted (something refers to it), if it cannot.
    fn in_use(_catalog: &Catalog, _id: u64) -> Option<String> {
        None
    }
    /// The object's signing secret, if it has one (providers, S2S destinations).
    fn secret_mut(&mut self) -> Option<&mut Option<String>> {
        None
    }
    /// The object as the API shows it: a secret is never sent back, only
    /// [`REDACTED_SECRET`] in its place.
    fn redacted(&self) -> Self {
        let mut shown = self.clone();
        if let Some(secret) = shown.secret_mut() {
            if secret.is_some() {
                *secret = Some(REDACTED_SECRET.into());
            }
        }
        shown
    }
}

/// What `GET` shows for a secret, and what a `PUT` sends back to keep the stored one.
pub const REDACTED_SECRET: &str = "********";

impl Resource for Provider {
    const NAME: &'static str = "providers";
    const SINGULAR: &'static str = "provider";
    const ID_FIELD: &'static str = "pid";
    const MAX_ID: u64 = u32::MAX as u64;
    const KIND: CatalogKind = CatalogKind::Provider;
    const HAS_INTEGRATION_CODE: bool = false;

    fn id(&self) -> u64 {
        u64::from(self.pid)
    }
    fn integration_code(&self) -> Option<&str> {
        None
    }
    fn all(catalog: &Catalog) -> &Vec<Self> {
        &catalog.providers
    }
    fn all_mut(catalog: &mut Catalog) -> &mut Vec<Self> {
        &mut catalog.providers
    }
    fn secret_mut(&mut self) -> Option<&mut Option<String>> {
        Some(&mut self.secret)
    }
    fn into_object(self) -> CatalogObject {
        CatalogObject::Provider(self)
    }
}

impl Resource for Trait {
    const NAME: &'static str = "traits";
    const SINGULAR: &'static str = "trait";
    const ID_FIELD: &'static str = "sid";
    // Ids must survive a JSON round trip through JavaScript clients.
    const MAX_ID: u64 = (1 << 53) - 1;
    const KIND: CatalogKind = CatalogKind::Trait;

    fn id(&self) -> u64 {
        self.sid
    }
    fn integration_code(&self) -> Option<&str> {
        Some(&self.integration_code)
    }
    fn all(catalog: &Catalog) -> &Vec<Self> {
        &catalog.traits
    }
    fn all_mut(catalog: &mut Catalog) -> &mut Vec<Self> {
        &mut catalog.traits
    }
    fn into_object(self) -> CatalogObject {
        CatalogObject::Trait(self)
    }
    fn in_use(catalog: &Catalog, id: u64) -> Option<String> {
        let users: Vec<String> = catalog
            .segments
            .iter()
            .filter(|s| SegmentRule::parse(&s.segment_rule).is_ok_and(|r| r.traits().contains(&id)))
            .map(|s| s.sid.to_string())
            .collect();
        (!users.is_empty()).then(|| format!("used by segment(s) {}", users.join(", ")))
    }
}

impl Resource for Segment {
    const NAME: &'static str = "segments";
    const SINGULAR: &'static str = "segment";
    const ID_FIELD: &'static str = "sid";
    const MAX_ID: u64 = (1 << 53) - 1;
    const KIND: CatalogKind = CatalogKind::Segment;

    fn id(&self) -> u64 {
        self.sid
    }
    fn integration_code(&self) -> Option<&str> {
        Some(&self.integration_code)
    }
    fn all(catalog: &Catalog) -> &Vec<Self> {
        &catalog.segments
    }
    fn all_mut(catalog: &mut Catalog) -> &mut Vec<Self> {
        &mut catalog.segments
    }
    fn into_object(self) -> CatalogObject {
        CatalogObject::Segment(self)
    }
    fn in_use(catalog: &Catalog, id: u64) -> Option<String> {
        let users: Vec<String> = catalog
            .destinations
            .iter()
            .filter(|d| d.mappings.iter().any(|m| m.sid == id))
            .map(|d| d.destination_id.to_string())
            .collect();
        (!users.is_empty()).then(|| format!("mapped to destination(s) {}", users.join(", ")))
    }
}

impl Resource for Destination {
    const NAME: &'static str = "destinations";
    const SINGULAR: &'static str = "destination";
    const ID_FIELD: &'static str = "destinationId";
    const MAX_ID: u64 = (1 << 53) - 1;
    const KIND: CatalogKind = CatalogKind::Destination;
    const HAS_INTEGRATION_CODE: bool = false;

    fn id(&self) -> u64 {
        self.destination_id
    }
    fn integration_code(&self) -> Option<&str> {
        None
    }
    fn all(catalog: &Catalog) -> &Vec<Self> {
        &catalog.destinations
    }
    fn all_mut(catalog: &mut Catalog) -> &mut Vec<Self> {
        &mut catalog.destinations
    }
    fn secret_mut(&mut self) -> Option<&mut Option<String>> {
        Some(&mut self.secret)
    }
    fn into_object(self) -> CatalogObject {
        CatalogObject::Destination(Box::new(self))
    }
}

/// The object with this id.
pub fn find<T: Resource>(catalog: &Catalog, id: u64) -> Option<&T> {
    T::all(catalog).iter().find(|o| o.id() == id)
}

/// The object with this integration code (codes are not required to be unique; the one with
/// the lowest id is returned).
pub fn find_by_code<'a, T: Resource>(catalog: &'a Catalog, code: &str) -> Option<&'a T> {
    T::all(catalog)
        .iter()
        .filter(|o| o.integration_code() == Some(code))
        .min_by_key(|o| o.id())
}

fn not_found<T: Resource>(id: u64) -> AdminError {
    AdminError::NotFound(format!("no {} with {} {id}", T::SINGULAR, T::ID_FIELD))
}

/// Reads an object from a JSON body whose id is `id`: the body must not carry another one.
fn object_with_id<T: Resource>(body: Value, id: u64) -> Result<T, AdminError> {
    let Value::Object(mut map) = body else {
        return Err(AdminError::Invalid {
            message: format!("the body must be a JSON object (a {})", T::SINGULAR),
            field: None,
            offset: None,
        });
    };
    match map.get(T::ID_FIELD) {
        None => {}
        Some(v) if v.as_u64() == Some(id) => {}
        Some(_) => {
            return Err(AdminError::invalid(
                T::ID_FIELD,
                format!("{} is {id} here and cannot be changed", T::ID_FIELD),
            ))
        }
    }
    map.insert(T::ID_FIELD.to_string(), Value::from(id));
    serde_path_to_error::deserialize(Value::Object(map)).map_err(AdminError::shape_at)
}

/// `POST`: adds the object under the next free id (the server assigns ids; a body carrying
/// one is refused).
pub fn create<T: Resource>(
    catalog: &mut Catalog,
    body: Value,
) -> Result<(CatalogChange, T), AdminError> {
    if body.get(T::ID_FIELD).is_some() {
        return Err(AdminError::invalid(
            T::ID_FIELD,
            format!("{} is assigned by the server; leave it out", T::ID_FIELD),
        ));
    }
    let id = T::all(catalog).iter().map(T::id).max().unwrap_or(0) + 1;
    if id > T::MAX_ID {
        return Err(AdminError::invalid(T::ID_FIELD, "no id left"));
    }
    let mut object: T = object_with_id(body, id)?;
    if let Some(secret) = object.secret_mut() {
        if secret.as_deref() == Some(REDACTED_SECRET) {
            return Err(AdminError::invalid(
                "secret",
                format!("{REDACTED_SECRET:?} stands for a stored secret; give the secret itself"),
            ));
        }
    }
    T::all_mut(catalog).push(object.clone());
    Ok((CatalogChange::Put(object.clone().into_object()), object))
}

/// `PUT /{id}`: replaces an existing object.
pub fn replace<T: Resource>(
    catalog: &mut Catalog,
    id: u64,
    body: Value,
) -> Result<(CatalogChange, T), AdminError> {
    let mut object: T = object_with_id(body, id)?;
    let slot = T::all_mut(catalog)
        .iter_mut()
        .find(|o| o.id() == id)
        .ok_or_else(|| not_found::<T>(id))?;
    // A client that read the object back sends the placeholder: the stored secret stays.
    let stored = slot.secret_mut().and_then(|s| s.clone());
    if let Some(secret) = object.secret_mut() {
        if secret.as_deref() == Some(REDACTED_SECRET) {
            *secret = stored;
        }
    }
    *slot = object.clone();
    Ok((CatalogChange::Put(object.clone().into_object()), object))
}

/// `DELETE /{id}`: removes an object nothing refers to (`409` otherwise).
pub fn delete<T: Resource>(
    catalog: &mut Catalog,
    id: u64,
) -> Result<(CatalogChange, ()), AdminError> {
    if find::<T>(catalog, id).is_none() {
        return Err(not_found::<T>(id));
    }
    if let Some(why) = T::in_use(catalog, id) {
        return Err(AdminError::Conflict {
            message: format!("{} {id} cannot be deleted: {why}", T::SINGULAR),
            field: Some(T::ID_FIELD.to_string()),
        });
    }
    T::all_mut(catalog).retain(|o| o.id() != id);
    Ok((CatalogChange::Delete(T::KIND, id), ()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample() -> Catalog {
        serde_json::from_value(json!({
            "traits": [
                {"sid": 11, "name": "cars", "traitType": "RULE_BASED_TRAIT", "traitRule": "c_page == cars", "dataSourceId": 1, "integrationCode": "cars"},
                {"sid": 12, "name": "news", "traitType": "RULE_BASED_TRAIT", "traitRule": "c_page == news", "dataSourceId": 1}
            ],
            "segments": [{"sid": 101, "name": "auto", "segmentRule": "11T", "dataSourceId": 1}]
        }))
        .unwrap()
    }

    #[test]
    fn create_assigns_the_next_id_and_refuses_a_given_one() {
        let mut c = sample();
        let (change, t) = create::<Trait>(
            &mut c,
            json!({"name": "x", "traitType": "RULE_BASED_TRAIT", "traitRule": "a == 1", "dataSourceId": 1}),
        )
        .unwrap();
        assert_eq!(t.sid, 13);
        assert_eq!(t.ttl, 120, "defaults filled in");
        assert!(matches!(
            change,
            CatalogChange::Put(CatalogObject::Trait(_))
        ));
        assert_eq!(c.traits.len(), 3);
        let e = create::<Trait>(&mut c, json!({"sid": 5, "name": "x"})).unwrap_err();
        assert!(matches!(e, AdminError::Invalid { field: Some(ref f), .. } if f == "sid"));
        let e = create::<Trait>(&mut c, json!({"name": "x", "bogus": 1})).unwrap_err();
        assert!(
            matches!(e, AdminError::Invalid { field: Some(ref f), .. } if f == "bogus"),
            "{e:?}"
        );
        let e = create::<Trait>(&mut c, json!([1])).unwrap_err();
        assert!(matches!(e, AdminError::Invalid { field: None, .. }));
    }

    #[test]
    fn replace_keeps_the_id_and_delete_respects_references() {
        let mut c = sample();
        let (_, t) = replace::<Trait>(
            &mut c,
            12,
            json!({"name": "renamed", "traitType": "RULE_BASED_TRAIT", "traitRule": "c_page == news", "dataSourceId": 1}),
        )
        .unwrap();
        assert_eq!(
            (t.sid, find::<Trait>(&c, 12).unwrap().name.as_str()),
            (12, "renamed")
        );
        assert!(matches!(
            replace::<Trait>(&mut c, 12, json!({"sid": 13})).unwrap_err(),
            AdminError::Invalid { .. }
        ));
        assert!(matches!(
            replace::<Trait>(
                &mut c,
                99,
                json!({"name": "n", "traitType": "RULE_BASED_TRAIT", "traitRule": "a == 1", "dataSourceId": 1})
            )
            .unwrap_err(),
            AdminError::NotFound(_)
        ));
        let e = delete::<Trait>(&mut c, 11).unwrap_err();
        assert!(matches!(e, AdminError::Conflict { .. }), "{e:?}");
        assert!(e.to_string().contains("101"), "{e}");
        delete::<Trait>(&mut c, 12).unwrap();
        assert!(find::<Trait>(&c, 12).is_none());
        assert!(matches!(
            delete::<Trait>(&mut c, 12).unwrap_err(),
            AdminError::NotFound(_)
        ));
        assert_eq!(find_by_code::<Trait>(&c, "cars").unwrap().sid, 11);
    }
}
