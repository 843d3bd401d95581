-- switchboard default dialplan. Runs once for every new call.
--
-- What a script can read:
--   call.from     caller's extension (the authenticated user)
--   call.to       the number dialled
--   call.display  caller's display name
--   call.domain   the account
--   call.trunk    the trunk a call from outside came in through (else nil)
--   call.vars     a table the script may use freely
-- What it can do:
--   dial(target, {timeout = s, external = bool, trunk = name})  rings every device of target
--       (a number or a list of numbers); returns {result = "answered" | "busy" |
--       "no-answer" | "failed" | "cancelled", code = SIP status}; when answered
--       it returns after the call has ended
--   answer()  playback("file.wav")  hangup(code)  set_caller_id(number, name)
--   log.info(msg)  log.warn(msg)  log.error(msg)
-- When the script ends without a connected call, the caller gets the status
-- of the last failed dial (486 busy, 480 no answer, 404 unknown, ...).

-- Internal extensions: three or four digits.
if call.to:match("^%d%d%d%d?$") then
  local r = dial(call.to, { timeout = 30 })
  if r.result ~= "answered" then
    log.info(call.from .. " -> " .. call.to .. ": " .. r.result .. " (" .. r.code .. ")")
  end
  return
end

-- Longer numbers are external: they need the caller's outbound permission
-- (403 otherwise; a call from a trunk goes out only if a trunk is named
-- here) and a trunk in the account's list (503 without one).
if call.to:match("^%+?%d+$") then
  dial(call.to, { external = true })
  return
end

-- Anything else does not exist.
hangup(404)
