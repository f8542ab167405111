// Numbers of the kernel's netlink and nf_tables user API, as the uapi headers
// define them (linux/netlink.h, linux/netfilter/nfnetlink.h,
// linux/netfilter/nf_tables.h, linux/netfilter.h). Only what the element
// encoder uses.

/** socket(2) / setsockopt(2) numbers. */
export const AF_NETLINK = 16;
export const SOCK_RAW = 3;
export const SOCK_CLOEXEC = 0o2000000;
export const NETLINK_NETFILTER = 12;
export const SOL_NETLINK = 270;
/** Errors do not echo the whole request back. */
export const NETLINK_CAP_ACK = 10;
/** Errors carry the kernel's message and the offset of the attribute at fault. */
export const NETLINK_EXT_ACK = 11;
export const MSG_DONTWAIT = 0x40;

/** struct nlmsghdr: len u32, type u16, flags u16, seq u32, pid u32. */
export const NLMSG_HDRLEN = 16;
/** struct nfgenmsg: family u8, version u8, res_id be16. */
export const NFGENMSG_LEN = 4;
/** struct nlattr: len u16, type u16. */
export const NLA_HDRLEN = 4;
export const NLA_F_NESTED = 0x8000;

export const NLM_F_REQUEST = 0x01;
export const NLM_F_ACK = 0x04;
export const NLM_F_CREATE = 0x400;
/** In an NLMSG_ERROR reply: extended ack attributes follow. */
export const NLM_F_ACK_TLVS = 0x200;
/** In an NLMSG_ERROR reply: the request was not echoed (NETLINK_CAP_ACK). */
export const NLM_F_CAPPED = 0x100;

export const NLMSG_ERROR = 2;
export const NLMSG_DONE = 3;

export const NLMSGERR_ATTR_MSG = 1;
export const NLMSGERR_ATTR_OFFS = 2;

export const NFNETLINK_V0 = 0;
export const NFNL_SUBSYS_NFTABLES = 10;
/** NLMSG_MIN_TYPE and NLMSG_MIN_TYPE + 1. */
export const NFNL_MSG_BATCH_BEGIN = 16;
export const NFNL_MSG_BATCH_END = 17;

/** enum nf_tables_msg_types. */
export const NFT_MSG_NEWTABLE = 0;
export const NFT_MSG_GETTABLE = 1;
export const NFT_MSG_NEWSETELEM = 12;
export const NFT_MSG_DELSETELEM = 14;
export const NFT_MSG_NEWGEN = 15;
export const NFT_MSG_GETGEN = 16;

/** enum nft_gen_attributes. */
export const NFTA_GEN_ID = 1;
export const NFTA_GEN_PROC_PID = 2;
export const NFTA_GEN_PROC_NAME = 3;

/** The netlink message type of an nf_tables message: subsystem << 8 | message. */
export const nftMsgType = (msg: number): number => (NFNL_SUBSYS_NFTABLES << 8) | msg;

/** enum nft_table_attributes. */
export const NFTA_TABLE_NAME = 1;
export const NFTA_TABLE_USERDATA = 6;
/** libnftnl's table user data: a TLV list (type u8, length u8, value); the comment is type 0, NUL-terminated. */
export const NFTNL_UDATA_TABLE_COMMENT = 0;

/** enum nft_set_elem_list_attributes. */
export const NFTA_SET_ELEM_LIST_TABLE = 1;
export const NFTA_SET_ELEM_LIST_SET = 2;
export const NFTA_SET_ELEM_LIST_ELEMENTS = 3;

/** enum nft_list_attributes. */
export const NFTA_LIST_ELEM = 1;

/** enum nft_set_elem_attributes. */
export const NFTA_SET_ELEM_KEY = 1;
export const NFTA_SET_ELEM_DATA = 2;
export const NFTA_SET_ELEM_OBJREF = 9;
export const NFTA_SET_ELEM_KEY_END = 10;

/** enum nft_data_attributes. */
export const NFTA_DATA_VALUE = 1;
export const NFTA_DATA_VERDICT = 2;

/** enum nft_verdict_attributes. */
export const NFTA_VERDICT_CODE = 1;
export const NFTA_VERDICT_CHAIN = 2;

/** Verdict codes: NF_DROP, NF_ACCEPT (linux/netfilter.h) and enum nft_verdicts. */
export const VERDICT_CODE = {
  drop: 0,
  accept: 1,
  continue: -1,
  return: -5,
  jump: -3,
  goto: -4,
} as const;

/** Register size: each part of a concatenated key is padded to a multiple of it. */
export const NFT_REG32_SIZE = 4;
/** Largest key or data value the kernel takes (NFT_DATA_VALUE_MAXLEN). */
export const NFT_DATA_VALUE_MAXLEN = 64;
/** Interface names are IFNAMSIZ bytes in keys. */
export const IFNAMSIZ = 16;

/** enum nfproto, by nft family name. */
export const NFPROTO = {
  inet: 1,
  ip: 2,
  arp: 3,
  netdev: 5,
  bridge: 7,
  ip6: 10,
} as const;
export type NfFamily = keyof typeof NFPROTO;
