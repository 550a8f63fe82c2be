//! Route ownership: which function holds which route prefix, checked by
//! every backend in the transaction that deploys.

use super::StoreError;

/// Whether a deploy may claim routes inside or above those of another
/// function, given that function's name and routes: a route prefix belongs
/// to the function that first claimed it.
pub type NestPolicy<'a> = dyn Fn(&str, &[String]) -> bool + 'a;

/// Checks `routes`, claimed by `function`, against the routes other
/// functions hold (`taken`, as `(route, owner)` pairs grouped by owner): an
/// equal route is never shared; an overlapping one only where `may_nest`
/// accepts its owner, unless `function` holds that route already (`held`:
/// it claimed it first, or an operator let it nest there).
pub fn check_routes(
    function: &str,
    routes: &[String],
    held: &[String],
    taken: &[(String, String)],
    may_nest: &NestPolicy<'_>,
) -> Result<(), StoreError> {
    for route in routes {
        if let Some((_, owner)) = taken.iter().find(|(r, _)| r == route) {
            return Err(StoreError::RouteTaken {
                route: route.clone(),
                owner: owner.clone(),
            });
        }
    }
    for route in routes.iter().filter(|r| !held.contains(r)) {
        for (other_route, owner) in taken {
            if !crate::admin::access::routes_overlap(route, other_route) {
                continue;
            }
            let owner_routes: Vec<String> = taken
                .iter()
                .filter(|(_, o)| o == owner)
                .map(|(r, _)| r.clone())
                .collect();
            if !may_nest(owner, &owner_routes) {
                return Err(StoreError::RouteNested {
                    route: route.clone(),
                    function: function.to_owned(),
                    other_route: other_route.clone(),
                    owner: owner.clone(),
                });
            }
        }
    }
    Ok(())
}
