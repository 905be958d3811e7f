-- The luv adapter's poll(fd, events, fn): read and write readiness of a
-- descriptor it does not own (DNS discovery polls c-ares's sockets so).
local H = require "helper"
local uv = require "luv"
local A = require "odo.adapter.luv"

describe("the luv adapter's poll", function()
  local fds
  before_each(function() fds = assert(uv.socketpair("stream")) end)
  after_each(function()
    for _, fd in ipairs(fds) do uv.fs_close(fd) end
    assert.same({}, H.active_handles())
  end)

  it("reports readable once there is something to read, and writable at once", function()
    local reads, writes = {}, {}
    local r = assert(A.poll(fds[1], "r", function(rd, wr) reads[#reads + 1] = { rd, wr } end))
    local w = assert(A.poll(fds[2], "w", function(rd, wr) writes[#writes + 1] = { rd, wr } end))
    assert.is_true(H.luv_until(function() return #writes > 0 end))
    assert.same({ false, true }, writes[1])
    w.stop()
    H.luv_until(function() return false end, 50)
    assert.equal(0, #reads)
    assert.equal(1, uv.fs_write(fds[2], "x"))
    assert.is_true(H.luv_until(function() return #reads > 0 end))
    assert.same({ true, false }, reads[1])
    r.stop()
    r.stop()
  end)

  it("\"rw\" reports both when both hold; a new poll on a descriptor after stop works", function()
    assert.equal(1, uv.fs_write(fds[2], "x"))
    local got
    local p = assert(A.poll(fds[1], "rw", function(rd, wr) got = { rd, wr } end))
    assert.is_true(H.luv_until(function() return got ~= nil end))
    assert.same({ true, true }, got)
    p.stop()
    got = nil
    p = assert(A.poll(fds[1], "r", function(rd, wr) got = { rd, wr } end))
    assert.is_true(H.luv_until(function() return got ~= nil end))
    assert.same({ true, false }, got)
    p.stop()
  end)

  -- (not tried: a descriptor luv cannot poll, for which A.poll returns
  -- nil, err, name: luv 1.44 leaks the handle it allocated then)
  it("raises on events other than r, w and rw", function()
    assert.has_error(function() A.poll(fds[1], "x", function() end) end)
  end)
end)
