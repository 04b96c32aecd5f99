"""The two-user referral path through real HTTP and the sandbox WeChat platform."""

from tests.conftest import Harness


async def test_second_user_binds_to_first_through_qr_scene(harness: Harness) -> None:
    alice, bob = harness.user(), harness.user()
    code_a = await harness.register(alice, "13800138000", "张三")
    reply = await harness.follow(bob, scene=code_a)
    assert "张*" in reply
    code_b = await harness.register(bob, "13900139000", "李四")
    status, body = await harness.api("GET", f"/distributors/{code_b}")
    assert status == 200
    assert body["inviter_code"] == code_a
    assert body["phone"] == "13900139000"
