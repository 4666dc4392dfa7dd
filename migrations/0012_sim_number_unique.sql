-- On the simulated network a phone number is one phone: it may be linked to at most one line that
-- is not logged out, whichever account the line belongs to. Without this, a second account could
-- "scan" a number another account's line holds and receive (and send as) that number. Enforced
-- here rather than only checked, so two concurrent scans cannot both win; the line command maps a
-- violation of this index to `409 line_conflict`. (Real WhatsApp numbers may link several devices,
-- so the rule is the sim engine's alone.)
CREATE UNIQUE INDEX lines_sim_phone_key ON lines (phone) WHERE engine = 'sim' AND status <> 'logged_out';
