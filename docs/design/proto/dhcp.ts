// DHCP messages with options anywhere: the prototypes use the lab's builders
// (src/lab/frames/dhcp.ts, where these moved when learning was implemented).
export {
  DHCP,
  DHCP_MAGIC as MAGIC,
  dhcpClientFrame,
  dhcpPayload,
  dhcpServerFrame,
  fillerOptions as filler,
  type DhcpFrameOptions,
  type DhcpMessage,
  type DhcpOption,
} from '../../../src/lab/frames/dhcp.js';
