"""The help text: what the bot can do, shown by 帮助, by 客服 without a question, and to anything
the bot does not understand (several features show it, so it lives here). Chinese only: the
English aliases of the commands still work, but the help does not show them (CONTRACT §5)."""

from __future__ import annotations

HELP = (
    "分销员助手可以帮您：\n"
    "【注册】成为分销员（可附邀请人的推广码：注册 K7QF2M）\n"
    "【海报】专属推广海报（“海报 列表”看全部，回复序号领取）\n"
    "【话术】推广文案（可加商品编号或关键词）\n"
    "【我的推广】本周扫码、关注、注册和成员首单\n"
    "【订单】最近的推广订单\n"
    "【收益】今日、本月、累计收益\n"
    "【团队】团队人数、业绩和成员（“团队 2”看第 2 页）\n"
    "【团队订单】给您带来佣金的团队订单\n"
    "【明细】每一笔收支明细\n"
    "【等级】当前等级和升级条件\n"
    "【提现 金额】例如：提现 12.50；“提现 全部”提取全部可提现余额\n"
    "【提现记录】最近 10 笔提现和进度（含领取链接）\n"
    "【排行】本月推广之星排行和您的名次\n"
    "【培训】适合您等级的培训资料\n"
    "【客服 问题】向客服提问，例如：客服 佣金什么时候到账（含“紧急”优先处理）\n"
    "【退订周报】/【订阅周报】停止或恢复每周一的个人周报\n"
    "【退出】退出分销计划"
)
