"""What staff read, in Chinese, from one catalogue: the problems of a content pack (the 内容 page,
POST /api/content-packs' `details[].message` and `distbot content import`), the audit trail's
summaries, /api's 401/403/404 messages, the console's 403/404 pages and its other frame
sentences, and the names of the roles.

Floor 1 (domain), so content/, kit/ and handlers/ all read it. Two kinds of sentence live beside
their rules instead and are not repeated here: a refusal's Chinese sentence is its code's in
`domain.refusals.CODES`, and what a distributor reads in chat stays with its feature. A message
keeps its technical detail as it is (a key, a path, a value, a limit, a parser's own words), so
the person who fixes the pack finds the place. Fill a message with `say(MESSAGES, key, **values)`
(str.format: `{x!r}` quotes a value as the manifest writes it)."""

from __future__ import annotations

from typing import Any

# ---- roles (the scopes of CONTRACT §4.11, as people read them) ---------------------------------
ROLE_NAMES: dict[str, str] = {"shop": "商城", "finance": "财务", "ops": "运营", "admin": "管理员"}

# ---- content packs: every problem names its file and field; this is the sentence -------------
KIND_NAMES: dict[str, str] = {
    "str": "文字", "int": "整数", "list": "文字列表", "path": "文件路径", "table": "表（table）",
    "tables": "表的列表", "ver": "文字", "array": "表的数组（[[...]]）",
    "moment": "带时区的 RFC 3339 日期时间，例如 {example}",
    "rates": "比例列表，例如 [0.20, 0.05]",
}
PACK: dict[str, str] = {
    # a product's own rates (CONTRACT §6)
    "rates_count": "须有 1 到 {most} 个比例（distribution.max_levels = {most}），现有 {n} 个",
    "rates_range": "每个比例须不小于 0 且小于 1（0.2 即 20%）",
    # the zip
    "pack_too_large": "内容包有 {mib:.1f} MiB，最多 50 MiB",
    "zip_unreadable": "不是可读取的 zip 文件",
    "zip_too_many": "有 {n} 个文件，最多 {most} 个",
    "zip_backslash": "路径含反斜杠或盘符，请用以 / 分隔的相对路径",
    "zip_absolute": "是绝对路径（absolute path），路径须相对于压缩包根目录",
    "zip_traversal": "路径含 '..'（路径穿越，path traversal）",
    "zip_symlink": "是符号链接（symbolic link），不允许链接",
    "zip_not_regular": "不是普通文件",
    "zip_encrypted": "已加密，请上传未加密的压缩包",
    "zip_twice": "在压缩包里出现了两次",
    "zip_bomb": "解压后膨胀 {ratio} 倍（超过 {most}×），疑似压缩炸弹（zip bomb）",
    "zip_total": "解压后有 {mib:.0f} MiB，解压后最多 {most} MiB（uncompressed）",
    "zip_damaged": "在压缩包里已损坏（{error}）",
    "zip_method": "用了服务器读不了的压缩方式或加密",
    "zip_size_lies": "实际字节数与压缩包声明的不一致",
    "no_manifest": "压缩包根目录没有 manifest.toml",
    "nested_manifest": "；找到了 {found}，请压缩文件夹里的内容，而不是文件夹本身",
    # the manifest's shape
    "toml_syntax": "TOML 语法错误：{error}",
    "chinese_key": '；中文键名须加引号，例如 details = {{"产地" = "新疆若羌"}}',
    "not_table": "须为表（table）",
    "unknown_key": "未知的键 {key!r}，可用的键：{allowed}",
    "missing_key": "缺少必填的键 {key!r}",
    "wrong_kind": "须为{kind}",
    "not_empty": "（不能为空）",
    "empty_pack": "内容包里没有商品、文案、海报或培训（products、scripts、posters、trainings）",
    "duplicate": "重复的 {key} {value!r}（与 {section}[{other}] 重复）",
    "pack_name": "须为 1–64 个字母、数字、'.'、'_' 或 '-'，以字母或数字开头",
    "pack_version": "须为 1–32 个字母、数字、'.'、'_'、'+' 或 '-'",
    "item_key": "{name} {value!r} 须为 1–64 个字母、数字、'.'、'_' 或 '-'",
    "unknown_sku": "SKU {sku!r} 不在商品（products）中",
    "unknown_rank": "未知的等级 {rank!r}，已配置的等级：{ranks}",
    # times
    "not_rfc3339": "{value!r} 不是 RFC 3339 日期时间，请写成例如 {example}",
    "not_a_time": "{value!r} 不是真实存在的日期和时间",
    "no_zone": "是没有时区的{what}，请带上时区，例如 {example}",
    "zoneless_datetime": "日期时间", "zoneless_date": "日期（没有时间）", "zoneless_time": "时间（没有日期）",
    "until_before_from": "须晚于 live_from（{live_from}）",
    "announce_long": "有 {n} 个字，最多 {most} 个字",
    # files in the zip
    "path_outside": "路径 {path!r} 须相对于压缩包根目录，不能含 '..'",
    "not_in_zip": "指向 {path!r}，压缩包里没有这个文件",
    "text_too_large": "超过 {kib} KiB",
    "not_utf8": "不是 UTF-8 文本",
    "font_too_large": "超过 {mb} MB",
    "not_font": "不是 Pillow 能读取的 TrueType/OpenType 字体",
    "image_too_large": "有 {mb:.1f} MB，图片最多 10 MB",
    "image_bomb": "超过 {side}×{side} 像素（疑似解压炸弹，decompression bomb）",
    "not_image": "不是 Pillow 能打开的图片（JPEG、PNG、WebP 或 GIF）",
    "image_format": "是 {format} 格式，请用 JPEG、PNG、WebP 或 GIF",
    "image_too_wide": "有 {w}×{h} 像素，图片最多 {side}×{side}",
    "image_damaged": "已损坏或不完整，Pillow 无法解码",
    # templates
    "template_error": "模板错误：{detail}",
    "product_without_sku": '用到了 product，但没有 sku：请加上 sku = "..." 或去掉 product.*',
    # products
    "price_negative": "不能为负数（以分为单位的整数：12900 = ¥129.00）",
    "url_scheme": "须以 https:// 或 http:// 开头",
    "details_many": "商品 {sku!r} 有 {n} 项详情，最多 {most} 项",
    "detail_name": "商品 {sku!r}：详情名 {name!r} 须为 1–{most} 个字",
    "detail_text": '商品 {sku!r}：详情 {name!r} 的值须为非空文字，请加引号，例如 {name} = "2026-11"',
    "detail_long": "商品 {sku!r}：详情 {name!r} 有 {n} 个字，最多 {most} 个字",
    "buy_scheme": "商品 {sku!r}：buy_url（购买链接）须以 https:// 或 http:// 开头，而不是 {url!r}",
    "buy_shape": "商品 {sku!r}：buy_url 须为一个网址，最多 {most} 个字符，不能含空格、引号或尖括号",
    "buy_placeholder": "商品 {sku!r}：buy_url 只能用 {{code}}（推广码）作占位符",
    "buy_host": "商品 {sku!r}：buy_url 没有主机名",
    # posters
    "qr_small": "为 {size} px，二维码至少要 {most} px 才能扫描",
    "qr_outside": "二维码框 ({x}, {y}) 边长 {size} 超出了 {w}×{h} 的背景图",
    "bad_colour": "{color!r} 不是颜色，请用 #RRGGBB",
    "text_size": "须在 8 到 400 像素之间",
    "one_of": "须为以下之一：{choices}",
    "text_outside": "文字框 ({x}, {y}) 字号 {size} 超出了 {w}×{h} 的背景图",
    "text_too_wide": "文字框从 x={left:.0f} 到 x={right:.0f}，超出了宽 {w} 像素的背景图",
    # `distbot content import`'s line above the problems (the 内容 page says the same)
    "pack_invalid": "内容包 {path} 没有通过检查：{n} 个问题，什么也没有导入：",
}

# ---- the audit trail: what a request did, by the route's handler (kit.auditing) --------------
# A handler that names what it did (kit.auditing.note, a console form's `done` message) refines it.
AUDIT: dict[str, str] = {
    "sign_in": "登录后台", "sign_in_failed": "登录失败", "logout": "退出登录", "no_such_route": "不存在的接口",
    "order_event": "订单事件：{name}（{type}，{event_id}）",
    "post_order_event": "推送订单事件", "post_adjustment": "调整余额", "adjustment_form": "调整余额",
    "approve_withdrawal": "批准提现", "reject_withdrawal": "拒绝提现", "approve_withdrawals": "批量批准提现",
    "decide_page": "处理提现", "batch_page": "批量批准提现", "retry_page": "重试转账",
    "upload_pack": "上传内容包", "upload_form": "上传内容包", "activate_pack": "启用内容包版本",
    "activate_form": "启用内容包版本", "create_campaign": "创建活动", "create_form": "创建活动",
    "cancel_campaign": "取消活动", "cancel_form": "取消活动", "set_rank": "设置等级", "rank_form": "设置等级",
    "create_contest": "创建比赛", "create_contest_page": "创建比赛", "reply_ticket": "回复工单",
    "close_ticket": "关闭工单", "act_on_ticket_page": "处理工单", "resolve_flag": "处理风险提示",
    "resolve_page": "处理风险提示", "suspend_distributor": "暂停分销员", "suspend_form": "暂停分销员",
    "reinstate_distributor": "恢复分销员", "reinstate_form": "恢复分销员", "change_inviter": "更换邀请人",
    "inviter_form": "更换邀请人", "save_settings": "修改分销设置", "patch_settings": "修改分销设置",
    "add_form": "添加员工", "disable_form": "停用员工", "enable_form": "启用员工", "password_form": "重设员工密码",
    "roles_form": "修改员工角色", "totp_on_form": "开启两步验证", "totp_off_form": "关闭两步验证",
    "run_job": "立即运行任务", "run_team_bonus": "发放团队奖励", "login": "登录后台",
    "patch_contest": "修改比赛", "edit_contest_page": "修改比赛", "end_contest_api": "结束比赛",
    "end_contest_page": "结束比赛",
}

# ---- /api's refusals of a whole request (its "message"; the "error" code is what clients match) --
API: dict[str, str] = {
    "unauthorized": "需要有效的请求头 Authorization: Bearer <令牌>。",
    "forbidden": "令牌“{name}”无权使用 {method} {path}：需要{roles}权限（{needs}），没有做任何更改。",
    "no_route": "没有这个接口：{method} {path}。",
    "method_not_allowed": "{path} 不接受 {method} 请求。",
    "too_large": "请求体太大，没有做任何更改。",
    "internal": "服务器内部错误，没有做任何更改。",
}

# ---- the console's frame: its refusals of a whole page or form ----------------------------------
CONSOLE: dict[str, str] = {
    "forbidden_title": "无权访问",
    "forbidden": "{who}“{name}”无权使用此页面（需要{roles}权限），没有做任何更改。",
    "account": "账号", "token": "令牌", "or": "或",
    "not_found_title": "没有这个页面",
    "not_found": "没有这个页面：{path}。请从上方菜单进入。",
    "refused_title": "拒绝",
    "sign_in_first": "请先登录。",
    "login_expired": "登录表单已过期，请刷新页面后重试。",
    "too_many_tries": "登录失败次数过多，请 {minutes} 分钟后再试。",
    "wrong_credentials": "账号、密码或管理令牌不正确。",
    "form_too_large": "表单太大：最多 {mib} MiB（内容包最多 50 MiB），没有做任何更改。",
    "bad_csrf": "表单已过期或来源不明（缺少有效的 csrf_token），没有做任何更改。",
    "not_done": "未完成：",
}


def say(messages: dict[str, str], key: str, /, **values: Any) -> str:
    """The catalogue's sentence `key` of `messages` (PACK, AUDIT, API, CONSOLE) filled with `values`."""
    return messages[key].format(**values)


def audit_summary(route_name: str) -> str:
    """A route's audit summary before its handler refines it: the Chinese name of what the route
    does (a route not in AUDIT yet keeps its handler's name, so nothing is lost)."""
    return AUDIT.get(route_name, route_name)
