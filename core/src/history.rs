//! `history.redb`: finished runs folded into a durable database (being written).
